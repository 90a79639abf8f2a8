"""COCO bbox evaluation (pycocotools) of a checkpoint folder on a data set split.

python scripts/evaluate.py --model outputs/detr-custom/best --data path/to/coco --split val2017 --output m.json
accelerate launch --multi_gpu --num_processes 2 scripts/evaluate.py --model ... --data ...
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from modeling_detr_custom.apps.cli import parse_arguments
from modeling_detr_custom.apps.evaluate import EvaluateArguments, evaluate_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(EvaluateArguments, description=__doc__)
    (args,) = parse_arguments(parser, argv)
    try:
        evaluate_checkpoint(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
