#!/usr/bin/env python
"""Thin door to the installed command `detr-custom train`, defined in
modeling_detr_custom.apps.cli.train."""

import sys

from modeling_detr_custom.apps.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
