"""An albumentations `Compose` as a training augmentation of this package: `transform(image, annotations, generator)`.

    import albumentations as A
    augment = A.Compose([A.RandomBrightnessContrast(), A.Affine(scale=(0.8, 1.2))],
                        bbox_params=A.BboxParams(format="coco", label_fields=["category_ids"]))
    split = load_detection_split("path/to/data", "train", train=True, augment=augment)

The Compose must have `bbox_params` (any of albumentations' box formats: `coco`, `pascal_voc`, `yolo`,
`albumentations`), so that boxes follow the pixels. Each object goes in with its index (as the first label field,
or as an extra box column when there is none), and comes out with it: the object's other fields (`category_id`,
`iscrowd`, ...) follow their box, objects albumentations drops (cropped out, `min_visibility`) are dropped whole,
and `area` is recomputed as the new box's `w * h`. The random state is seeded from the `generator` the data set
passes (a function of seed, epoch and image), so augmentation is reproducible and a resumed run repeats it.

albumentations is an optional dependency (`pip install "detr-custom[augment]"`); this module never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["AlbumentationsTransform", "is_albumentations_compose"]

_FORMATS = ("coco", "pascal_voc", "yolo", "albumentations")


def is_albumentations_compose(transform: Any) -> bool:
    """True for an albumentations `Compose` (or other composition) without importing albumentations."""
    return type(transform).__module__.startswith("albumentations") and hasattr(transform, "processors")


class AlbumentationsTransform:
    """Wraps an albumentations `Compose` with `bbox_params` into `transform(image, annotations, generator)`.

    Raises:
        ValueError: If the Compose has no `bbox_params` (its boxes would not follow the image) or an unknown box
            format.
    """

    def __init__(self, compose: Any) -> None:
        processor = getattr(compose, "processors", {}).get("bboxes")
        if processor is None:
            raise ValueError(
                "The albumentations Compose has no bbox_params, so boxes would not follow the image: build it as "
                'A.Compose([...], bbox_params=A.BboxParams(format="coco", label_fields=["category_ids"])).'
            )
        self.box_format = processor.params.format
        if self.box_format not in _FORMATS:
            raise ValueError(f"bbox_params format must be one of {_FORMATS}; got {self.box_format!r}.")
        self.label_fields = list(processor.params.label_fields or [])
        self.compose = compose

    def __call__(
        self, image: Image.Image, annotations: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Image.Image, dict[str, Any]]:
        objects = annotations["annotations"]
        width, height = image.size
        boxes = [_from_coco(obj["bbox"], width, height, self.box_format) for obj in objects]
        indices = list(range(len(objects)))
        if self.label_fields:
            inputs = {field: indices for field in self.label_fields}
        else:
            boxes, inputs = [[*box, index] for box, index in zip(boxes, indices)], {}
        if generator is not None and hasattr(self.compose, "set_random_seed"):
            self.compose.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        result = self.compose(image=np.asarray(image.convert("RGB")), bboxes=boxes, **inputs)
        out = Image.fromarray(np.asarray(result["image"], dtype=np.uint8))
        kept = result[self.label_fields[0]] if self.label_fields else [box[-1] for box in result["bboxes"]]
        rebuilt = []
        for box, index in zip(result["bboxes"], kept):
            x, y, w, h = _to_coco([float(v) for v in list(box)[:4]], out.width, out.height, self.box_format)
            # albumentations works in float32 normalised coordinates: clip its rounding at the border
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x, y, w, h = x0, y0, min(x + w, out.width) - x0, min(y + h, out.height) - y0
            if w > 0 and h > 0:
                rebuilt.append({**objects[int(index)], "bbox": [x, y, w, h], "area": w * h})
        return out, {**annotations, "annotations": rebuilt}

    def __repr__(self) -> str:
        return f"AlbumentationsTransform({self.compose!r})"


def _from_coco(box: list[float], width: int, height: int, box_format: str) -> list[float]:
    x, y, w, h = box
    if box_format == "coco":
        return [x, y, w, h]
    if box_format == "pascal_voc":
        return [x, y, x + w, y + h]
    if box_format == "albumentations":
        return [x / width, y / height, (x + w) / width, (y + h) / height]
    return [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]  # yolo


def _to_coco(box: list[float], width: int, height: int, box_format: str) -> list[float]:
    if box_format == "coco":
        return box
    if box_format == "pascal_voc":
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    if box_format == "albumentations":
        x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
        return [x0, y0, x1 - x0, y1 - y0]
    cx, cy, w, h = box[0] * width, box[1] * height, box[2] * width, box[3] * height  # yolo
    return [cx - w / 2, cy - h / 2, w, h]
