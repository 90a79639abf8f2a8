"""Roboflow "COCO" exports: one folder per split holding its images and `_annotations.coco.json`.

    ROOT/train/_annotations.coco.json   ROOT/train/<file_name>
    ROOT/valid/_annotations.coco.json   ROOT/valid/<file_name>
    ROOT/test/_annotations.coco.json    ROOT/test/<file_name>

The JSON is COCO's instances format, read by the COCO loader (`coco.read_coco_annotation_file`). Two things
differ from a COCO folder: the validation split is called `valid` (`val` and `validation` are accepted for it),
and Roboflow adds a placeholder category named after the project (id 0, `supercategory: "none"`, the
supercategory of every real class) that no annotation uses; it is dropped, so the model gets only the real
classes. An annotation that does use it is then an unknown-category error naming the image and annotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.coco import read_coco_annotation_file
from modeling_detr_custom.data.records import DataReport, ImageRecord

__all__ = ["ANNOTATION_FILE_NAME", "is_roboflow_folder", "read_roboflow_split", "roboflow_splits"]

ANNOTATION_FILE_NAME = "_annotations.coco.json"
_SPLIT_ALIASES = {"val": ("valid", "validation"), "valid": ("val", "validation"), "validation": ("valid", "val")}


def is_roboflow_folder(path: str | Path) -> bool:
    """True if some subfolder of `path` holds `_annotations.coco.json`."""
    return any(Path(path).glob(f"*/{ANNOTATION_FILE_NAME}"))


def roboflow_splits(root: str | Path) -> list[str]:
    """The split folders of a Roboflow export, sorted."""
    return sorted(p.parent.name for p in Path(root).glob(f"*/{ANNOTATION_FILE_NAME}"))


def read_roboflow_split(
    root: str | Path, split: str, report: DataReport
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]:
    """Reads `ROOT/<split>/_annotations.coco.json` (split aliases: val, valid, validation) into records.

    Raises:
        FileNotFoundError: If the split has no annotation file; the message lists the splits there are.
        ValueError: As `coco.read_coco_annotation_file` (malformed JSON, ids, categories).
    """
    for name in (split, *_SPLIT_ALIASES.get(split, ())):
        annotation_file = Path(root) / name / ANNOTATION_FILE_NAME
        if annotation_file.is_file():
            return read_coco_annotation_file(
                annotation_file, [annotation_file.parent], report, category_filter=drop_placeholder_category
            )
    raise FileNotFoundError(
        f"No split {split!r} in the Roboflow COCO export {root}: there is no "
        f"{Path(root) / split / ANNOTATION_FILE_NAME}. Splits there: {roboflow_splits(root) or 'none'}."
    )


def drop_placeholder_category(categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`categories` without Roboflow's project placeholder: the one entry with `supercategory` "none" whose name
    is the supercategory of every other entry. Lists without such an entry are returned as they are."""
    if len(categories) < 2:
        return categories
    for index, category in enumerate(categories):
        others = categories[:index] + categories[index + 1 :]
        if str(category.get("supercategory", "")).lower() == "none" and all(
            other.get("supercategory") == category.get("name") for other in others
        ):
            return others
    return categories
