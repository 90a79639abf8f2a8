"""Evaluate a checkpoint folder on a data set split with pycocotools (behind `scripts/evaluate.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader

from modeling_detr_custom.apps.loading import load_detector
from modeling_detr_custom.data import CategoryMapping, load_detection_split
from modeling_detr_custom.data.records import check_bad_data_policy
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, format_metrics_table
from modeling_detr_custom.evaluation.loop import evaluate_model
from modeling_detr_custom.training.arguments import ON_BAD_DATA_HELP
from modeling_detr_custom.training.distributed import make_accelerator

__all__ = ["EvaluateArguments", "evaluate_checkpoint"]


@dataclass
class EvaluateArguments:
    """Arguments of `scripts/evaluate.py`."""

    model: str = field(metadata={"help": "Checkpoint folder or Hub id (config.json, model.safetensors, ...)."})
    data: str = field(
        default="synthetic",
        metadata={"help": "COCO folder, `datasets` folder or Hub name, or 'synthetic' (as for training)."},
    )
    split: str = field(default="val", metadata={"help": "Split to evaluate."})
    output: str | None = field(default=None, metadata={"help": "Write the metrics as JSON to this file."})
    detections: str | None = field(
        default=None,
        metadata={"help": "Write every detection as a COCO results JSON (the data set's own category ids)."},
    )
    per_device_eval_batch_size: int = field(default=2, metadata={"help": "Images per device per batch."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' (CUDA) or 'bf16'."})
    on_bad_data: str = field(default="raise", metadata={"help": ON_BAD_DATA_HELP})

    def __post_init__(self) -> None:
        check_bad_data_policy(self.on_bad_data, "--on_bad_data")


def evaluate_checkpoint(args: EvaluateArguments) -> dict[str, float] | None:
    """COCO bbox metrics of `args.model` on `args.data`/`args.split`; the dict on the main process, else None.

    The model's labels are mapped back to the data set's category ids through the `category_ids` the training
    script wrote into its config; a model trained on other categories is refused rather than scored wrongly.
    """
    accelerator = make_accelerator(mixed_precision=args.mixed_precision)
    model, processor = load_detector(args.model)
    model_mapping = CategoryMapping.from_config(model.config)
    with accelerator.main_process_first():
        split = load_detection_split(args.data, args.split, processor=processor, on_error=args.on_bad_data)
    split.mapping.check_compatible(model_mapping)
    loader = DataLoader(split.dataset, batch_size=args.per_device_eval_batch_size, collate_fn=split.collate_fn)
    model, loader = accelerator.prepare(model, loader)
    evaluator = CocoEvaluator(split.coco, split.mapping)
    metrics = evaluate_model(model, loader, processor, evaluator, split.mapping, accelerator)
    if accelerator.is_main_process:
        print(f"COCO bbox metrics of {args.model} on {args.data} [{args.split}]:")
        print(format_metrics_table(metrics))
        if split.report():
            print(split.report())
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(metrics, indent=2))
        if args.detections:
            Path(args.detections).parent.mkdir(parents=True, exist_ok=True)
            Path(args.detections).write_text(json.dumps(evaluator.detections()))
    return metrics
