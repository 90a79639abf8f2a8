"""Data layer shared by every script: COCO folders, `datasets` data sets and the synthetic shapes data set.

    split = load_detection_split("synthetic", "train", train=True)
    loader = DataLoader(split.dataset, batch_size=2, collate_fn=split.collate_fn)
    evaluator = CocoEvaluator(split.coco, split.mapping)   # modeling_detr_custom.evaluation

Modules: `records` (the record format and the bad-data policy), `images` (opening images), `categories`
(category ids <-> contiguous labels), the sources (one loader per format: `coco`, `roboflow`, `yolo`, `voc`,
`hf_datasets`; `formats` finds which layout a folder has), `synthetic` (the generator), `collate`, and `dataset`
(`load_detection_split`, tying them together).

Names are imported on first access, so `python -m modeling_detr_custom.data.synthetic` does not import the
whole data stack first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeling_detr_custom.data.categories import CategoryMapping
    from modeling_detr_custom.data.coco import build_coco_gt
    from modeling_detr_custom.data.collate import DetectionCollator
    from modeling_detr_custom.data.dataset import (
        DetectionSplit,
        DetectionTransform,
        default_processor,
        list_splits,
        load_detection_split,
    )
    from modeling_detr_custom.data.images import open_image
    from modeling_detr_custom.data.records import DataReport
    from modeling_detr_custom.data.synthetic import SyntheticSpec, ensure_synthetic_dataset, write_synthetic_dataset

_EXPORTS = {
    "CategoryMapping": "categories",
    "DataReport": "records",
    "DetectionCollator": "collate",
    "DetectionSplit": "dataset",
    "DetectionTransform": "dataset",
    "SyntheticSpec": "synthetic",
    "build_coco_gt": "coco",
    "default_processor": "dataset",
    "list_splits": "dataset",
    "ensure_synthetic_dataset": "synthetic",
    "load_detection_split": "dataset",
    "open_image": "images",
    "write_synthetic_dataset": "synthetic",
}

__all__ = [
    "CategoryMapping",
    "DataReport",
    "DetectionCollator",
    "DetectionSplit",
    "DetectionTransform",
    "SyntheticSpec",
    "build_coco_gt",
    "default_processor",
    "ensure_synthetic_dataset",
    "list_splits",
    "load_detection_split",
    "open_image",
    "write_synthetic_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
