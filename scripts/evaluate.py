#!/usr/bin/env python
"""Thin door to the installed command `detr-custom evaluate`, defined in
modeling_detr_custom.apps.cli.evaluate."""

import sys

from modeling_detr_custom.apps.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
