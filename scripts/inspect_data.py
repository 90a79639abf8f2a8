#!/usr/bin/env python
"""Thin door to the installed command `detr-custom inspect-data`, defined in
modeling_detr_custom.apps.cli.inspect_data."""

import sys

from modeling_detr_custom.apps.cli.inspect_data import main

if __name__ == "__main__":
    sys.exit(main())
