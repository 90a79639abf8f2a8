#!/usr/bin/env python
"""Thin door to the installed command `detr-custom predict`, defined in
modeling_detr_custom.apps.cli.predict."""

import sys

from modeling_detr_custom.apps.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
