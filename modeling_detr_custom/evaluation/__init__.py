"""Evaluation: COCO bbox metrics with pycocotools (`coco_evaluator`) and the distributed loop over a split (`loop`)."""

from modeling_detr_custom.evaluation.coco_evaluator import (
    METRIC_NAMES,
    CocoEvaluator,
    format_metrics_table,
    predictions_from_outputs,
)

__all__ = ["METRIC_NAMES", "CocoEvaluator", "format_metrics_table", "predictions_from_outputs"]
