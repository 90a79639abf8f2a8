"""Evaluate a checkpoint folder on a data set split with pycocotools (behind `scripts/evaluate.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from modeling_detr_custom.apps.loading import load_detector
from modeling_detr_custom.data import CategoryMapping, load_detection_split
from modeling_detr_custom.data.records import check_bad_data_policy
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, format_metrics_table, metrics_for_json
from modeling_detr_custom.evaluation.loop import evaluate_model
from modeling_detr_custom.evaluation.plots import plot_confusion_matrix, plot_pr_curves
from modeling_detr_custom.evaluation.threshold_metrics import threshold_metrics
from modeling_detr_custom.training.arguments import ON_BAD_DATA_HELP
from modeling_detr_custom.training.distributed import make_accelerator

__all__ = ["EvaluateArguments", "evaluate_checkpoint"]


@dataclass
class EvaluateArguments:
    """Arguments of `scripts/evaluate.py`."""

    model: str = field(metadata={"help": "Checkpoint folder or Hub id (config.json, model.safetensors, ...)."})
    data: str = field(
        default="synthetic",
        metadata={
            "help": "The data set, as for training: a COCO, Roboflow COCO, YOLO or Pascal VOC folder, a `datasets` "
            "folder or Hub name, or 'synthetic'."
        },
    )
    split: str = field(default="val", metadata={"help": "Split to evaluate."})
    output: str | None = field(
        default=None,
        metadata={
            "help": "Write the metrics as JSON to this file: the COCO metrics, 'per_class' (AP, AP50, AR100 per class "
            "name) and 'at_score_threshold' (precision, recall, F1 and the confusion matrix); metrics pycocotools "
            "reports as -1 (no objects of that size) are null."
        },
    )
    plots: str | None = field(
        default=None,
        metadata={
            "help": "Write pictures to this folder: pr_curve_<class>.png per class (IoU 0.5 and 0.75, the operating "
            "point at --score_threshold) and confusion_matrix.png (with a background row and column). Needs "
            "matplotlib (the 'plots' extra)."
        },
    )
    score_threshold: float = field(
        default=0.5,
        metadata={
            "help": "Score from which a detection counts for precision, recall, F1 and the confusion matrix (the "
            "COCO metrics always use every detection)."
        },
    )
    iou_threshold: float = field(
        default=0.5,
        metadata={"help": "IoU at which a detection finds an object, for the same (one of 0.5, 0.55, ..., 0.95)."},
    )
    detections: str | None = field(
        default=None,
        metadata={"help": "Write every detection as a COCO results JSON (the data set's own category ids)."},
    )
    per_device_eval_batch_size: int = field(default=2, metadata={"help": "Images per device per batch."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' (CUDA) or 'bf16'."})
    on_bad_data: str = field(default="raise", metadata={"help": ON_BAD_DATA_HELP})

    def __post_init__(self) -> None:
        check_bad_data_policy(self.on_bad_data, "--on_bad_data")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"--score_threshold must be in [0, 1], got {self.score_threshold}")
        if not any(abs(self.iou_threshold - (0.5 + 0.05 * i)) < 1e-9 for i in range(10)):
            raise ValueError(f"--iou_threshold must be one of 0.5, 0.55, ..., 0.95, got {self.iou_threshold}")


def evaluate_checkpoint(args: EvaluateArguments) -> dict[str, Any] | None:
    """COCO bbox metrics of `args.model` on `args.data`/`args.split`; the dict on the main process, else None.

    The dict holds the COCO metrics, `per_class` and `at_score_threshold` (`threshold_metrics`), with pycocotools'
    -1 kept (the JSON file says null).

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
    if not accelerator.is_main_process:
        return None
    at_threshold = threshold_metrics(evaluator.coco_eval, args.score_threshold, args.iou_threshold)
    metrics = {**metrics, "at_score_threshold": at_threshold}
    print(f"COCO bbox metrics of {args.model} on {args.data} [{args.split}]:")
    print(format_metrics_table(metrics))
    print(format_threshold_summary(at_threshold))
    if split.report():
        print(split.report())
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics_for_json(metrics), indent=2))
    if args.detections:
        Path(args.detections).parent.mkdir(parents=True, exist_ok=True)
        Path(args.detections).write_text(json.dumps(evaluator.detections()))
    if args.plots:
        curves = plot_pr_curves(evaluator.coco_eval, args.plots, at_threshold)
        title = f"Confusion matrix at score >= {args.score_threshold:g}, IoU >= {args.iou_threshold:g}"
        matrix = plot_confusion_matrix(
            at_threshold["confusion_matrix"], Path(args.plots) / "confusion_matrix.png", title
        )
        print(f"Wrote {len(curves)} precision-recall curve(s) and {matrix.name} to {args.plots}")
    return metrics


def format_threshold_summary(at_threshold: dict[str, Any]) -> str:
    """One line: overall precision, recall and F1 at the score threshold, with the counts behind them."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"At score >= {at_threshold['score_threshold']:g} (IoU >= {at_threshold['iou_threshold']:g}): precision "
        f"{shown(at_threshold['precision'])}, recall {shown(at_threshold['recall'])}, F1 {shown(at_threshold['f1'])} "
        f"({at_threshold['tp']} found, {at_threshold['fp']} false detections, {at_threshold['fn']} missed)"
    )
