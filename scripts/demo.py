#!/usr/bin/env python
"""Thin door to the installed command `detr-custom demo`, defined in
modeling_detr_custom.apps.cli.demo."""

import sys

from modeling_detr_custom.apps.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
