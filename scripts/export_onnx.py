#!/usr/bin/env python
"""Thin door to the installed command `detr-custom export-onnx`, defined in
modeling_detr_custom.apps.cli.export_onnx."""

import sys

from modeling_detr_custom.apps.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
