"""Dataset health check: images and boxes per class and split, box sizes, every invalid annotation, sample pictures.

python scripts/inspect_data.py --data path/to/dataset --output_dir data_inspection
detr-custom inspect-data --data path/to/yolo-folder --splits train,val --num_samples 16
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from modeling_detr_custom.apps.cli import parse_arguments
from modeling_detr_custom.apps.inspect_data import InspectDataArguments, inspect_data


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(InspectDataArguments, description=__doc__)
    (args,) = parse_arguments(parser, argv)
    try:
        inspect_data(args)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
