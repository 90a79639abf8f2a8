"""COCO evaluation of a model over a data loader, on one process or many (shared by every script)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, predictions_from_outputs

__all__ = ["evaluate_model", "forward_by_image_size"]


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
    own category ids. Each image is run at its own size, without padding (`forward_by_image_size`): zero padding
    changes the backbone's features next to it, so padding an image to the size of a larger neighbour would make
    the numbers depend on the batch size and on the number of processes.

    Returns:
        The metrics dict on the main process, None on the others.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    bar = tqdm(dataloader, desc=description, disable=not accelerator.is_main_process, leave=False)
    for batch in bar:
        labels = batch["labels"]
        predictions: list[Any] = [None] * len(labels)
        for indices, outputs in forward_by_image_size(model, batch["pixel_values"], batch["pixel_mask"]):
            target_sizes = torch.stack([labels[i]["orig_size"] for i in indices])
            image_ids = [int(labels[i]["image_id"]) for i in indices]
            for i, prediction in zip(
                indices, predictions_from_outputs(outputs, processor, target_sizes, image_ids, mapping)
            ):
                predictions[i] = prediction
        predictions = accelerator.gather_for_metrics(predictions, use_gather_object=True)
        if accelerator.is_main_process:
            evaluator.update(predictions)
    model.train(was_training)
    return evaluator.compute() if accelerator.is_main_process else None


def forward_by_image_size(
    model: Callable[..., Any], pixel_values: torch.Tensor, pixel_mask: torch.Tensor
) -> Iterator[tuple[list[int], Any]]:
    """Run the model once per group of images of equal unpadded size, each group cropped to that size.

    Args:
        model: The model, or any callable taking `pixel_values=` and `pixel_mask=` (e.g. an onnxruntime backend).
        pixel_values: `(B, 3, H, W)` padded bottom/right. pixel_mask: `(B, H, W)`, 1 on real pixels.

    Yields:
        `(indices into the batch, model outputs for those images)`, groups in order of first appearance.
    """
    heights = pixel_mask[:, :, 0].sum(dim=1).tolist()  # the valid region is the top-left (h, w) rectangle
    widths = pixel_mask[:, 0, :].sum(dim=1).tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(zip(heights, widths)):
        groups.setdefault(size, []).append(index)
    for (height, width), indices in groups.items():
        rows = torch.tensor(indices, device=pixel_values.device)
        values = pixel_values.index_select(0, rows)[:, :, :height, :width]
        mask = pixel_mask.index_select(0, rows)[:, :height, :width]
        yield indices, model(pixel_values=values, pixel_mask=mask)
