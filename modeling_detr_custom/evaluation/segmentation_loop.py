"""Evaluation of a segmentation model over a data loader: bbox AP plus panoptic quality or mask AP.

The same loop as `loop.evaluate_model` (each image at its own unpadded size, predictions gathered from every
process), on a split loaded with `task="panoptic"` or `task="instance"`:

- panoptic: the processor's `post_process_panoptic_segmentation` at the original size (stuff classes fused, the
  original's score threshold 0.85), scored against the split's PNGs by `PanopticQualityEvaluator`: `PQ`, `SQ`,
  `RQ` and their `_th` (things) and `_st` (stuff) variants, in percent as the COCO panoptic evaluation prints them,
  and `panoptic_per_class`;
- instance: one mask per query (`post_process_instance_masks`, the original `PostProcessSegm`) through pycocotools'
  `segm` evaluation: `segm_AP`, `segm_AP50`, ... (the bbox names with a `segm_` prefix, in [0, 1]) and
  `segm_per_class`;

and in both the bbox metrics under their usual names (`AP`, `AP50`, ..., `per_class`, `duplicate_rate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from tqdm.auto import tqdm

from image_processing.segmentation_masks import rgb_to_id
from modeling_detr_custom.evaluation.coco_evaluator import METRIC_NAMES, CocoEvaluator, predictions_from_outputs
from modeling_detr_custom.evaluation.loop import forward_by_image_size
from modeling_detr_custom.evaluation.panoptic_quality import PANOPTIC_METRIC_NAMES, PanopticQualityEvaluator

__all__ = [
    "PANOPTIC_SCORE_THRESHOLD",
    "SEGM_METRIC_NAMES",
    "SEGM_PREFIX",
    "evaluate_segmentation_model",
    "panoptic_prediction",
]

# The original's PostProcessPanoptic keeps queries scored above 0.85.
PANOPTIC_SCORE_THRESHOLD = 0.85
SEGM_PREFIX = "segm_"
SEGM_METRIC_NAMES = tuple(f"{SEGM_PREFIX}{name}" for name in METRIC_NAMES)


@torch.no_grad()
def evaluate_segmentation_model(
    model: torch.nn.Module, dataloader: Any, split: Any, accelerator: Accelerator, description: str = "eval"
) -> dict[str, Any] | None:
    """Bbox AP and, by `split.task`, panoptic quality or mask AP of `model` on `split` (a `DetectionSplit`).

    Returns:
        The metrics on the main process (see the module docstring), None on the others.
    """
    if split.task not in ("panoptic", "instance"):
        raise ValueError(f"evaluate_segmentation_model needs a panoptic or instance split, got task {split.task!r}.")
    boxes = CocoEvaluator(split.coco, split.mapping)
    masks = CocoEvaluator(split.coco, split.mapping, iou_type="segm") if split.task == "instance" else None
    was_training = model.training
    model.eval()
    collected: list[dict[str, Any]] = []
    for batch in tqdm(dataloader, desc=description, disable=not accelerator.is_main_process, leave=False):
        labels = batch["labels"]
        items: list[Any] = [None] * len(labels)
        for indices, outputs in forward_by_image_size(model, batch["pixel_values"], batch["pixel_mask"]):
            for index, item in zip(indices, _image_items(outputs, indices, labels, split, boxes, masks)):
                items[index] = item
        collected += accelerator.gather_for_metrics(items, use_gather_object=True)
    model.train(was_training)
    if not accelerator.is_main_process:
        return None
    return _metrics(collected, split, boxes, masks)


def _image_items(
    outputs: Any, indices: list[int], labels: list[dict], split: Any, boxes: CocoEvaluator, masks: CocoEvaluator | None
) -> list[dict[str, Any]]:
    """Per image: the bbox prediction, and the mask prediction (RLE) or the panoptic segmentation, all small."""
    processor, mapping = split.processor, split.mapping
    target_sizes = torch.stack([labels[i]["orig_size"] for i in indices])
    image_ids = [int(labels[i]["image_id"]) for i in indices]
    detections = predictions_from_outputs(outputs, processor, target_sizes, image_ids, mapping)
    items = [{"image_id": image_id, "bbox": boxes.compact(d)} for image_id, d in zip(image_ids, detections)]
    if masks is not None:
        instance = processor.post_process_instance_masks(outputs, threshold=0.0, target_sizes=target_sizes)
        for item, detection, result in zip(items, detections, instance):
            item["segm"] = masks.compact({**detection, "masks": result["masks"].cpu().numpy()})  # bool, RLE
    else:
        stuff = split.panoptic.stuff_category_ids
        for item, segmentation in zip(items, panoptic_prediction(outputs, processor, mapping, target_sizes, stuff)):
            item["panoptic"] = segmentation
    return items


def panoptic_prediction(
    outputs: Any, processor: Any, mapping: Any, target_sizes: Any, stuff_category_ids: set[int],
    threshold: float = PANOPTIC_SCORE_THRESHOLD,
) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:  # fmt: skip
    """Per image, the predicted segment ids `(height, width)` int32 (0: no segment) and `{"id", "category_id",
    "score"}` per segment (the data set's category ids), stuff classes fused, at `target_sizes`."""
    stuff_labels = {mapping.to_label(c) for c in stuff_category_ids if c in mapping.category_ids}
    results = processor.post_process_panoptic_segmentation(
        outputs, threshold=threshold, label_ids_to_fuse=stuff_labels, target_sizes=target_sizes
    )
    predictions = []
    for result in results:
        ids = result["segmentation"].cpu().numpy().astype(np.int32)
        segments = [
            {"id": s["id"], "category_id": mapping.to_category_id(int(s["label_id"])), "score": s["score"]}
            for s in result["segments_info"]
        ]
        predictions.append((np.where(ids < 0, 0, ids), segments))
    return predictions


def _metrics(
    collected: list[dict[str, Any]], split: Any, boxes: CocoEvaluator, masks: CocoEvaluator | None
) -> dict[str, Any]:
    seen: set[int] = set()
    panoptic = PanopticQualityEvaluator(split.panoptic.categories) if masks is None else None
    for item in collected:
        if item["image_id"] in seen:  # a distributed sampler repeats images to even out the last batch
            continue
        seen.add(item["image_id"])
        boxes.update([item["bbox"]])
        if masks is not None:
            masks.update([item["segm"]])
        else:
            png, gt_segments = split.panoptic.images[item["image_id"]]
            if not png:  # an image without a panoptic annotation: nothing to score
                continue
            with Image.open(png) as image:
                gt_ids = rgb_to_id(np.asarray(image.convert("RGB")))
            pred_ids, pred_segments = item["panoptic"]
            panoptic.update(gt_ids, gt_segments, pred_ids, pred_segments)
    metrics = boxes.compute()
    if masks is not None:
        segm = masks.compute()
        metrics.update({f"{SEGM_PREFIX}{name}": segm[name] for name in METRIC_NAMES})
        metrics[f"{SEGM_PREFIX}per_class"] = segm["per_class"]
        return metrics
    quality = panoptic.compute()
    metrics.update({name: quality[name] for name in PANOPTIC_METRIC_NAMES})
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in split.panoptic.categories}
    metrics["panoptic_per_class"] = {names[c]: values for c, values in quality["per_class"].items()}
    return metrics
