#!/usr/bin/env python
"""Thin door to the installed command `detr-custom push-to-hub`, defined in
modeling_detr_custom.apps.cli.push_to_hub."""

import sys

from modeling_detr_custom.apps.cli.push_to_hub import main

if __name__ == "__main__":
    sys.exit(main())
