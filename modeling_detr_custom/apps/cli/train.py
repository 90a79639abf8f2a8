"""Train DETR with Accelerate on one process, several GPUs, or CPU processes.

python scripts/train.py --max_steps 200                       # synthetic data, small CPU model
accelerate launch --multi_gpu --num_processes 2 scripts/train.py --data path/to/coco --model detr-resnet-50
(--multi_gpu also on a machine without GPU: the processes then train on the CPU with gloo)
"""

from __future__ import annotations

import sys

from accelerate import PartialState
from transformers import HfArgumentParser

from modeling_detr_custom.apps.cli import parse_arguments
from modeling_detr_custom.training.arguments import DetrTrainingArguments
from modeling_detr_custom.training.atomic_folders import OutputWriteError
from modeling_detr_custom.training.hub import HubUploadError
from modeling_detr_custom.training.loop import NonFiniteLossError, train
from modeling_detr_custom.training.run_state import flags_given


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(DetrTrainingArguments, description=__doc__)
    (args,) = parse_arguments(parser, argv)
    try:
        result = train(args, given=flags_given(sys.argv[1:] if argv is None else argv))
    except (NonFiniteLossError, HubUploadError, OutputWriteError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if PartialState().is_main_process:
        best = f" and the best to {result.best_model_dir}" if result.best_model_dir else ""
        print(f"Saved the last model to {result.last_model_dir}{best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
