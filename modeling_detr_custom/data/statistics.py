"""Counts that tell whether a data set is healthy: images and boxes per class, box sizes, what is invalid.

    stats = split_statistics(load_detection_split(data, "train", on_error="skip", verify_images=True))

Used by `detr-custom inspect-data` (`apps/inspect_data.py`), which adds the pictures.
"""

from __future__ import annotations

import math
from typing import Any

from modeling_detr_custom.data.dataset import DetectionSplit

__all__ = ["COCO_SIZE_LIMITS", "box_sizes", "split_statistics"]

# COCO's object sizes by area: small < 32^2 px, medium < 96^2 px, large above (as APs/APm/APl count them).
COCO_SIZE_LIMITS = (32**2, 96**2)


def split_statistics(split: DetectionSplit) -> dict[str, Any]:
    """Images, boxes and sizes of one loaded split, per class; the problems its loading reported.

    Returns:
        `{"images", "images_without_objects", "boxes", "crowd_boxes", "sizes": {"small", "medium", "large"},
        "per_class": {name: {"images", "boxes"}}, "problems": [one message per invalid image or annotation,
        naming the file and the reason], "skipped_images", "skipped_annotations"}`. Boxes are the valid ones
        (clipped to their image); crowd boxes are counted apart and not in the sizes.
    """
    names = dict(zip(split.mapping.category_ids, split.mapping.names))
    per_class = {name: {"images": 0, "boxes": 0} for name in split.mapping.names}
    sizes = {"small": 0, "medium": 0, "large": 0}
    images_without_objects = boxes = crowd = 0
    for row in split.raw.select_columns(["annotations"]).to_list():
        annotations = row["annotations"]
        images_without_objects += not annotations
        for name in {names[a["category_id"]] for a in annotations}:
            per_class[name]["images"] += 1
        for annotation in annotations:
            if annotation["iscrowd"]:
                crowd += 1
                continue
            boxes += 1
            per_class[names[annotation["category_id"]]]["boxes"] += 1
            area = annotation["bbox"][2] * annotation["bbox"][3]
            sizes["small" if area < COCO_SIZE_LIMITS[0] else "medium" if area < COCO_SIZE_LIMITS[1] else "large"] += 1
    return {
        "images": len(split.raw),
        "images_without_objects": images_without_objects,
        "boxes": boxes,
        "crowd_boxes": crowd,
        "sizes": sizes,
        "per_class": per_class,
        "problems": list(split.data_report.messages),
        "skipped_images": split.data_report.skipped_images,
        "skipped_annotations": split.data_report.skipped_annotations,
    }


def box_sizes(split: DetectionSplit) -> tuple[list[float], list[float]]:
    """Per valid non-crowd box: `sqrt(w * h)` in pixels, and the same relative to `sqrt(image area)`."""
    absolute, relative = [], []
    for row in split.raw.select_columns(["width", "height", "annotations"]).to_list():
        image_side = math.sqrt(row["width"] * row["height"])
        for annotation in row["annotations"]:
            if not annotation["iscrowd"]:
                side = math.sqrt(annotation["bbox"][2] * annotation["bbox"][3])
                absolute.append(side)
                relative.append(side / image_side)
    return absolute, relative
