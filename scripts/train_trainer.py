#!/usr/bin/env python
"""Thin door to the installed command `detr-custom train-trainer`, defined in
modeling_detr_custom.apps.cli.train_trainer."""

import sys

from modeling_detr_custom.apps.cli.train_trainer import main

if __name__ == "__main__":
    sys.exit(main())
