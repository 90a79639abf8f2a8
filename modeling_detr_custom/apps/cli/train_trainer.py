"""Train DETR with transformers' Trainer: same data, model and COCO evaluation as scripts/train.py.

python scripts/train_trainer.py --max_steps 200                        # synthetic data, small CPU model
torchrun --nproc_per_node 4 scripts/train_trainer.py --data path/to/coco --model detr-resnet-50 --bf16 True
accelerate launch --multi_gpu --num_processes 2 scripts/train_trainer.py --data cppe-5 --push_to_hub --hub_model_id u/d

The final model goes to OUTPUT_DIR/last and the best evaluated one (--metric_for_best_model, AP) to OUTPUT_DIR/best,
as with scripts/train.py. An --output_dir holding another run is refused unless --resume_from_checkpoint or
--overwrite_output_dir is given. Every TrainingArguments option works; the defaults are the original DETR recipe
(lr 1e-4, backbone 1e-5, weight decay 1e-4, gradient clipping 0.1, StepLR at --lr_drop, batch 2 per device, aux
loss, evaluation every epoch).
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from modeling_detr_custom.apps.cli import parse_arguments
from modeling_detr_custom.evaluation.coco_evaluator import format_metrics_table
from modeling_detr_custom.training.atomic_folders import OutputWriteError
from modeling_detr_custom.training.hub import HubUploadError
from modeling_detr_custom.training.trainer import DetrDataArguments, DetrTrainerArguments, train_with_trainer


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((DetrDataArguments, DetrTrainerArguments), description=__doc__)
    data_args, training_args = parse_arguments(parser, argv)
    try:
        result = train_with_trainer(data_args, training_args)
    except (HubUploadError, OutputWriteError, ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    if training_args.process_index == 0:
        print(f"COCO bbox metrics on '{data_args.eval_split}' after training:")
        print(format_metrics_table(result.metrics))
        saved = " and ".join(str(folder) for folder in (result.last_model_dir, result.best_model_dir) if folder)
        print(f"Saved the model (Hub-style folders) to {saved} after {result.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
