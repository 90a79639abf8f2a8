"""Segmentation masks in the data layer: which tasks need them, how records keep them, how an image gets them.

`task="instance"` keeps every object's COCO `segmentation` (polygons or RLE) in the records, stored as a JSON
string (the `datasets` column has one type whatever the form); `task="panoptic"` keeps the path of each image's PNG
of segment ids (`panoptic_file`), each object's `id` being its segment id. When an image is loaded for training or
evaluation, `object_masks` turns either into one binary array per object, which the augmentation flips, resizes
and crops with the boxes and the image processor turns into `labels["masks"]`.
"""

from __future__ import annotations

import json
from typing import Any

import datasets
import numpy as np
from PIL import Image

from image_processing.segmentation_masks import decode_segmentation, rgb_to_id
from modeling_detr_custom.data.records import DataReport, ImageRecord

__all__ = [
    "TASKS",
    "check_task",
    "decoded_segmentations",
    "keep_segmentations",
    "object_masks",
    "record_features",
    "stored_segmentation",
]

TASKS = ("detection", "panoptic", "instance")


def check_task(task: str, option: str = "task") -> str:
    """The task name, or a ValueError listing the tasks."""
    if task not in TASKS:
        raise ValueError(f"{option} must be one of {', '.join(TASKS)}; got {task!r}.")
    return task


def record_features(features: datasets.Features, task: str) -> datasets.Features:
    """The record columns of `task`: detection's, plus each object's `segmentation` (instance, a JSON string) or
    the image's `panoptic_file` (panoptic)."""
    if task == "detection":
        return features
    annotation = dict(features["annotations"].feature)
    columns = dict(features)
    if task == "instance":
        annotation["segmentation"] = datasets.Value("string")
    else:
        columns["panoptic_file"] = datasets.Value("string")
    columns["annotations"] = datasets.List(annotation)
    return datasets.Features(columns)


def keep_segmentations(
    records: list[ImageRecord], validated: list[ImageRecord], report: DataReport
) -> list[ImageRecord]:
    """The validated records of an instance split with each object's `segmentation` put back (validation keeps
    the detection fields only), stored as JSON; objects without one are reported (raise or skip as the report's
    policy says).

    Args:
        records: The records as read (with `segmentation`), aligned with `validated`.
        validated: The same records after `validate_records` (some objects may have been dropped; objects are
            matched by their position among those with the same `id`, so ids need not be unique).
    """
    kept = []
    for record, clean in zip(records, validated):
        by_id: dict[Any, list[Any]] = {}
        for annotation in record["annotations"]:
            by_id.setdefault(annotation.get("id"), []).append(annotation.get("segmentation"))
        annotations = []
        for annotation in clean["annotations"]:
            segmentation = (by_id.get(annotation["id"]) or [None]).pop(0)
            if segmentation is None or segmentation == []:
                report.problem(
                    f"Annotation {annotation['id']} of image {record['file_name']} has no 'segmentation'; "
                    "--task instance needs polygons or an RLE mask for every object (skip it with --on_bad_data skip).",
                    skipped_annotations=1,
                )
                continue
            annotations.append({**annotation, "segmentation": json.dumps(segmentation)})
        kept.append({**clean, "annotations": annotations})
    return kept


def stored_segmentation(annotation: dict[str, Any]) -> Any:
    """An object's `segmentation` as read from a record (JSON-decoded)."""
    return json.loads(annotation["segmentation"])


def object_masks(row: dict[str, Any], task: str, height: int, width: int) -> list[np.ndarray]:
    """One `(height, width)` bool mask per object of a record row, in order.

    Raises:
        ValueError: naming the image: an unreadable PNG, a segment missing from it, or a malformed segmentation.
    """
    where = f"{row['file_name']} (image_id {row['image_id']})"
    if task == "instance":
        return [
            decode_segmentation(stored_segmentation(a), height, width, f"{where}, annotation {a['id']}")
            for a in row["annotations"]
        ]
    try:
        with Image.open(row["panoptic_file"]) as png:
            ids = rgb_to_id(np.asarray(png.convert("RGB")))
    except OSError as error:
        raise ValueError(f"{where}: cannot read its panoptic PNG {row['panoptic_file']}: {error}") from None
    if ids.shape != (height, width):
        raise ValueError(f"{where}: its panoptic PNG is {ids.shape[1]}x{ids.shape[0]}, the image {width}x{height}.")
    masks = []
    for annotation in row["annotations"]:
        mask = ids == int(annotation["id"])
        if not mask.any():
            raise ValueError(f"{where}: segment id {annotation['id']} does not occur in {row['panoptic_file']}.")
        masks.append(mask)
    return masks


def decoded_segmentations(records: list[ImageRecord]) -> list[ImageRecord]:
    """Records whose objects' stored (JSON) `segmentation` is decoded again, for the pycocotools ground truth."""
    return [
        {**record, "annotations": [{**a, "segmentation": stored_segmentation(a)} for a in record["annotations"]]}
        for record in records
    ]
