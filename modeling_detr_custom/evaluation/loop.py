"""COCO evaluation of a model over a data loader, on one process or many (shared by every script)."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, predictions_from_outputs

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataloader: Any,
    processor: Any,
    evaluator: CocoEvaluator,
    mapping: CategoryMapping,
    accelerator: Accelerator,
    description: str = "eval",
) -> dict[str, float] | None:
    """Run the model over `dataloader`, gather every process's predictions and score them with pycocotools.

    Predictions keep every query (threshold 0, as COCO evaluation expects) and are mapped back to the data set's
    own category ids. Boxes are scaled by each image's original size; padding never enters (boxes are relative
    to the unpadded image), so the batch size and the number of processes do not change the numbers.

    Returns:
        The metrics dict on the main process, None on the others.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    bar = tqdm(dataloader, desc=description, disable=not accelerator.is_main_process, leave=False)
    for batch in bar:
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        labels = batch["labels"]
        target_sizes = torch.stack([t["orig_size"] for t in labels])
        image_ids = [int(t["image_id"]) for t in labels]
        predictions = predictions_from_outputs(outputs, processor, target_sizes, image_ids, mapping)
        predictions = accelerator.gather_for_metrics(predictions, use_gather_object=True)
        if accelerator.is_main_process:
            evaluator.update(predictions)
    model.train(was_training)
    return evaluator.compute() if accelerator.is_main_process else None
