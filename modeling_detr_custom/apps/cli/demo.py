"""Train the small default DETR from scratch on the synthetic shapes on the CPU, evaluate it, draw detections.

python scripts/demo.py                      # what `make demo` runs: outputs/demo/last, outputs/demo.png
python scripts/demo.py --max_steps 300      # a shorter run
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from modeling_detr_custom.apps.cli import parse_arguments
from modeling_detr_custom.apps.demo import DemoArguments, run_demo


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(DemoArguments, description=__doc__)
    (args,) = parse_arguments(parser, argv)
    try:
        run_demo(args)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
