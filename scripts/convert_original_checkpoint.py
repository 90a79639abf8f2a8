#!/usr/bin/env python
"""Thin door to the installed command `detr-custom convert-original`, defined in
modeling_detr_custom.apps.cli.convert_original_checkpoint."""

import sys

from modeling_detr_custom.apps.cli.convert_original_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
