"""COCO mAP as the Trainer's `compute_metrics` (`scripts/train_trainer.py`)."""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import EvalPrediction

from modeling_detr_custom.data import DetectionSplit
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, metrics_for_trackers, predictions_from_outputs

__all__ = ["CocoMetrics"]


class CocoMetrics:
    """`compute_metrics` for the Trainer: COCO bbox mAP with the shared pycocotools evaluator.

    Each call receives one gathered batch (with `batch_eval_metrics`) or the whole evaluation set: predictions
    `(logits (B, Q, C+1), pred_boxes (B, Q, 4))` and label ids `(image_ids (B,), orig_sizes (B, 2))`, as
    `DetrTrainer.prediction_step` returns them. The main process post-processes them into the evaluator (CPU
    numpy; duplicate image ids, e.g. from a padded last batch, count once); at `compute_result` it scores them and
    every process gets the same metrics (so all agree on the best checkpoint): the COCO keys (`AP`, `AP50`, ...)
    and `num_images`, the number of distinct images scored.

    Args:
        split: The evaluation split (its `coco` ground truth, `mapping` and `processor`).
    """

    def __init__(self, split: DetectionSplit) -> None:
        self.processor = split.processor
        self.mapping = split.mapping
        self.evaluator = CocoEvaluator(split.coco, split.mapping)

    def __call__(self, eval_prediction: EvalPrediction, compute_result: bool = True) -> dict[str, float]:
        state = PartialState()
        if state.is_main_process:
            self._update(eval_prediction)
        if not compute_result:
            return {}
        metrics = [self._compute() if state.is_main_process else None]
        if state.num_processes > 1:
            broadcast_object_list(metrics, from_process=0)
        return metrics[0]

    def _compute(self) -> dict[str, float]:
        # Flat scalars for the Trainer's logs and trackers: `per_class/<name>/AP`, pycocotools' -1 left out.
        metrics = {**metrics_for_trackers(self.evaluator.compute()), "num_images": len(self.evaluator.predictions)}
        self.evaluator.reset()
        return metrics

    def _update(self, eval_prediction: EvalPrediction) -> None:
        logits, pred_boxes = (torch.as_tensor(x).detach().cpu().float() for x in eval_prediction.predictions)
        image_ids, orig_sizes = (torch.as_tensor(x).detach().cpu() for x in eval_prediction.label_ids)
        outputs = {"logits": logits, "pred_boxes": pred_boxes}  # (B, Q, C+1), (B, Q, 4)
        ids = image_ids.reshape(-1).tolist()
        self.evaluator.update(predictions_from_outputs(outputs, self.processor, orig_sizes, ids, self.mapping))
