"""COCO detection annotations: validated once here, then turned into the model's targets.

The data layer calls `parse_coco_detection_annotation` to validate its records, so one rule decides what a valid
annotation is, with one set of messages. Only sibling imports and third-party packages: copied next to Hub
checkpoints for `trust_remote_code`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert

from .segmentation_masks import masks_tensor

__all__ = ["finalize_target", "parse_coco_detection_annotation", "parse_object", "prepare_target"]


def parse_object(obj: Any, where: str) -> tuple[list[float], int, float, int]:
    """Checks one COCO object and returns `([x, y, w, h], category_id, area, iscrowd)`.

    The one place that decides what a well-formed COCO object is; the data layer calls it too, adding the checks
    that need the image (box inside it, category known).

    Args:
        obj: `{"bbox": [x, y, w, h], "category_id": int, "area": float, "iscrowd": 0 | 1}`; `area` defaults to
            `w * h`, `iscrowd` to 0 (`None` counts as absent for both).
        where: Names the object in error messages (image and annotation).

    Raises:
        ValueError: starting with `where`: not a dict, missing key, bbox not 4 numbers, NaN or inf, negative width
            or height, a category id that is not an int, `iscrowd` other than 0 or 1.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a dict with 'bbox' and 'category_id'; got {type(obj).__name__}.")
    for key in ("bbox", "category_id"):
        if key not in obj:
            raise ValueError(f"{where}: missing {key!r} (keys present: {sorted(obj)}).")
    bbox = obj["bbox"]
    try:
        if isinstance(bbox, (str, bytes)) or len(bbox) != 4:
            raise TypeError
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height]; got {bbox!r}.") from None
    category_id = obj["category_id"]
    iscrowd = 0 if obj.get("iscrowd") is None else obj["iscrowd"]
    if not isinstance(category_id, (int, np.integer)) or isinstance(category_id, bool):
        raise ValueError(f"{where}: 'category_id' must be an int; got {category_id!r}.")
    if isinstance(iscrowd, bool) or iscrowd not in (0, 1):
        raise ValueError(f"{where}: 'iscrowd' must be 0 or 1; got {iscrowd!r}.")
    area = obj.get("area")
    try:
        area = w * h if area is None else float(area)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'area' must be a number; got {area!r}.") from None
    if not all(np.isfinite(v) for v in (x, y, w, h, area)):
        raise ValueError(f"{where}: 'bbox' or 'area' contains NaN or inf: bbox {bbox!r}, area {area}.")
    if w < 0 or h < 0:
        raise ValueError(f"{where}: 'bbox' {list(bbox)} has a negative width or height (COCO boxes are [x, y, w, h]).")
    return [x, y, w, h], int(category_id), area, int(iscrowd)


def parse_coco_detection_annotation(annotation: Any, index: int = 0) -> dict[str, Any]:
    """Validates one image's COCO detection annotation and returns its objects as tensors (crowd included).

    Args:
        annotation: `{"image_id": int, "annotations": [{"bbox": [x, y, w, h], "category_id": int,
            "area": float, "iscrowd": 0 | 1}, ...]}`; `area` defaults to `w * h`, `iscrowd` to 0.
        index: Position of the image in the batch, for error messages.

    Returns:
        `image_id` (int), `boxes_xywh` `(n, 4)` float32, `category_ids` `(n,)` int64, `area` `(n,)` float32,
        `iscrowd` `(n,)` int64.

    Raises:
        ValueError: naming the image id and annotation index (missing key, NaN, negative width/height, ...).
    """
    if not isinstance(annotation, Mapping) or "image_id" not in annotation or "annotations" not in annotation:
        raise ValueError(
            f"Annotation {index} must be a dict {{'image_id': int, 'annotations': [...]}}; "
            f"got {annotation if not isinstance(annotation, Mapping) else sorted(annotation)!r}."
        )
    image_id, objects = annotation["image_id"], annotation["annotations"]
    if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
        raise ValueError(f"Annotation {index}: 'image_id' must be an int; got {image_id!r}.")
    if not isinstance(objects, Sequence) or isinstance(objects, str):
        raise ValueError(f"image_id {image_id!r}: 'annotations' must be a list; got {type(objects).__name__}.")
    parsed = [parse_object(obj, f"image_id {image_id!r}, annotation {j}") for j, obj in enumerate(objects)]
    boxes, category_ids, areas, iscrowd = zip(*parsed) if parsed else ((), (), (), ())
    return {
        "image_id": int(image_id),
        "boxes_xywh": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "category_ids": torch.tensor(category_ids, dtype=torch.int64),
        "area": torch.tensor(areas, dtype=torch.float32),
        "iscrowd": torch.tensor(iscrowd, dtype=torch.int64),
    }


def prepare_target(
    annotation: Any, index: int, image_size: tuple[int, int], return_masks: bool = False
) -> dict[str, Tensor]:
    """The original DETR's `ConvertCocoPolysToMask`: drop crowd, clip to the image, drop empty boxes; with
    `return_masks`, every kept object's `segmentation` decoded to `masks` `(n, height, width)` bool."""
    parsed = parse_coco_detection_annotation(annotation, index)
    height, width = image_size
    not_crowd = parsed["iscrowd"] == 0
    boxes_xyxy = box_convert(parsed["boxes_xywh"][not_crowd], "xywh", "xyxy")
    boxes_xyxy[:, 0::2] = boxes_xyxy[:, 0::2].clamp(min=0, max=width)
    boxes_xyxy[:, 1::2] = boxes_xyxy[:, 1::2].clamp(min=0, max=height)
    keep = (boxes_xyxy[:, 2] > boxes_xyxy[:, 0]) & (boxes_xyxy[:, 3] > boxes_xyxy[:, 1])
    target = {
        "image_id": torch.tensor([parsed["image_id"]], dtype=torch.int64),
        "class_labels": parsed["category_ids"][not_crowd][keep],
        "boxes_xyxy": boxes_xyxy[keep],
        "area": parsed["area"][not_crowd][keep],
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
    }
    if return_masks:
        target["masks"] = masks_tensor(annotation, height, width, index)[not_crowd][keep]
    return target


def finalize_target(
    target: dict[str, Tensor], new_size: tuple[int, int], do_convert_annotations: bool
) -> dict[str, Tensor]:
    """Scales a prepared target to the resized image: normalised cxcywh boxes (or absolute xyxy), scaled area."""
    orig_height, orig_width = target["orig_size"].tolist()
    ratio_height, ratio_width = new_size[0] / orig_height, new_size[1] / orig_width
    boxes_xyxy = target["boxes_xyxy"]
    if do_convert_annotations:
        # Relative to the resized image before padding, i.e. to the original image: resizing cancels out.
        scale = torch.tensor([orig_width, orig_height, orig_width, orig_height], dtype=torch.float32)
        boxes = box_convert(boxes_xyxy, "xyxy", "cxcywh") / scale
    else:
        boxes = boxes_xyxy * torch.tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    finalized = {
        "image_id": target["image_id"],
        "class_labels": target["class_labels"],
        "boxes": boxes,
        "area": target["area"] * (ratio_width * ratio_height),
        "iscrowd": torch.zeros_like(target["class_labels"]),
        "orig_size": target["orig_size"],
        "size": torch.tensor(new_size, dtype=torch.int64),
    }
    if "masks" in target:  # nearest resizing keeps them binary and aligned with the resized image
        masks = target["masks"]
        if len(masks):
            masks = torch.nn.functional.interpolate(masks[None].float(), size=new_size, mode="nearest")[0]
        else:
            masks = masks.new_zeros((0, *new_size))
        finalized["masks"] = masks.to(torch.uint8)
    return finalized
