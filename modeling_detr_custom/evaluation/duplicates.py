"""Duplicate rate: how often a set-prediction model still draws two boxes on one object.

DETR is meant to give one box per object without NMS, but a model that has not finished learning its one-to-one
assignment often scores two or three queries high on the same object. COCO AP barely notices (the extra boxes
are false positives ranked below the first), a picture does at once. The rate counts, among the detections above
the drawing threshold, those that overlap another such detection of the same class with IoU above 0.7:

    duplicate_rate = #{d : score_d > t, exists e != d, score_e > t, class_e = class_d, IoU(d, e) > 0.7}
                     / #{d : score_d > t}

(0 when nothing is above the threshold). Both detections of a pair count, so one object drawn twice among n
detections gives 2 / n.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from modeling_detr_custom.model.box_ops import box_iou

__all__ = ["DUPLICATE_IOU_THRESHOLD", "DUPLICATE_SCORE_THRESHOLD", "count_duplicates", "duplicate_rate"]

# The demo's (and the pipeline's) drawing threshold: what a user sees.
DUPLICATE_SCORE_THRESHOLD = 0.5
DUPLICATE_IOU_THRESHOLD = 0.7


def count_duplicates(
    scores: Any, labels: Any, boxes_xyxy: Any, score_threshold: float = DUPLICATE_SCORE_THRESHOLD,
    iou_threshold: float = DUPLICATE_IOU_THRESHOLD,
) -> tuple[int, int]:  # fmt: skip
    """Duplicates and detections above the threshold in one image.

    Args:
        scores: `(n,)` detection scores. labels: `(n,)` class ids (any consistent ids).
        boxes_xyxy: `(n, 4)` boxes, any one unit.
        score_threshold: Detections with `score > score_threshold` are counted (as the pipeline keeps them).
        iou_threshold: Two same-class detections with IoU above this are duplicates of each other.

    Returns:
        `(duplicates, detections)`: detections above the threshold that overlap another one of their class, and
        all detections above the threshold.
    """
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    boxes_xyxy = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32)).reshape(-1, 4)
    kept = scores > score_threshold
    labels, boxes_xyxy = labels[kept], boxes_xyxy[kept]
    if len(labels) < 2:
        return 0, len(labels)
    iou, _ = box_iou(boxes_xyxy, boxes_xyxy)  # (n, n)
    overlapping = (iou > iou_threshold) & (labels[:, None] == labels[None, :])
    overlapping.fill_diagonal_(False)
    return int(overlapping.any(1).sum()), len(labels)


def duplicate_rate(
    predictions: Iterable[Mapping[str, Any]], score_threshold: float = DUPLICATE_SCORE_THRESHOLD,
    iou_threshold: float = DUPLICATE_IOU_THRESHOLD,
) -> float:  # fmt: skip
    """Fraction of the detections above `score_threshold`, over all images, that duplicate another one.

    Args:
        predictions: Per image `{"scores": (n,), "labels" or "category_ids": (n,), "boxes": (n, 4) xyxy}`
            (what `CocoEvaluator.update` takes); images never mix.
        score_threshold, iou_threshold: As in `count_duplicates`.

    Returns:
        The rate in [0, 1]; 0.0 when no detection is above the threshold.
    """
    duplicates = detections = 0
    for prediction in predictions:
        labels = prediction["category_ids"] if "category_ids" in prediction else prediction["labels"]
        image_duplicates, image_detections = count_duplicates(
            prediction["scores"], labels, prediction["boxes"], score_threshold, iou_threshold
        )
        duplicates += image_duplicates
        detections += image_detections
    return duplicates / detections if detections else 0.0
