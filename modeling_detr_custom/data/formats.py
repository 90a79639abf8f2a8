"""Which on-disk layout a `--data` folder is: one entry per format, tried in order, and the error for none.

Each folder format has its own loader module turning a split into the project's one record type
(`records.ImageRecord`): `coco`, `roboflow`, `yolo`, `voc`. `datasets` folders (`save_to_disk` output, or files
`datasets.load_dataset` opens) are read by `hf_datasets`; Hub names and `synthetic` never reach this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.coco import coco_splits, is_coco_folder, read_coco_split
from modeling_detr_custom.data.records import DataReport, ImageRecord
from modeling_detr_custom.data.roboflow import is_roboflow_folder, read_roboflow_split, roboflow_splits
from modeling_detr_custom.data.voc import is_voc_folder, read_voc_split, voc_splits
from modeling_detr_custom.data.yolo import is_yolo_folder, read_yolo_split, yolo_splits

__all__ = ["FOLDER_FORMATS", "FolderFormat", "detect_folder_format", "is_datasets_folder"]

SplitReader = Callable[[Path, str, DataReport], tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]]


@dataclass(frozen=True)
class FolderFormat:
    """One folder layout: its name, the layout as a user reads it, and its detector, split lister and reader."""

    name: str
    layout: str
    detect: Callable[[Path], bool]
    splits: Callable[[Path], list[str]]
    read_split: SplitReader


FOLDER_FORMATS = (
    FolderFormat("coco", "COCO: annotations/instances_<split>.json + <split>/ images", is_coco_folder, coco_splits,
                 read_coco_split),
    FolderFormat("roboflow", "Roboflow COCO export: <split>/_annotations.coco.json beside the images "
                 "(train/, valid/, test/)", is_roboflow_folder, roboflow_splits, read_roboflow_split),
    FolderFormat("yolo", "YOLO: data.yaml (names) or classes.txt, with images/<split>/ + labels/<split>/ or "
                 "<split>/images/ + <split>/labels/ (normalised 'class cx cy w h' lines)", is_yolo_folder,
                 yolo_splits, read_yolo_split),
    FolderFormat("voc", "Pascal VOC: Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt", is_voc_folder,
                 voc_splits, read_voc_split),
)  # fmt: skip

_DATASETS_LAYOUT = (
    "`datasets`: a DatasetDict.save_to_disk folder (dataset_dict.json), or an imagefolder with metadata.jsonl "
    "(columns image, objects{bbox, category})"
)
_DATASETS_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet", "*.parquet", "*.arrow", "*.jsonl", "*.csv")


def is_datasets_folder(path: str | Path) -> bool:
    """True for a `save_to_disk` folder, a folder whose README.md declares `configs:` (a Hub data set's card), or
    one holding files `datasets.load_dataset` reads (metadata files, parquet, arrow, jsonl, csv), at its top or one
    level down."""
    path = Path(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    card = path / "README.md"
    if card.is_file() and "\nconfigs:" in card.read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]:
        return True
    return any(any(path.glob(pattern)) or any(path.glob(f"*/{pattern}")) for pattern in _DATASETS_FILES)


def detect_folder_format(path: str | Path) -> FolderFormat | None:
    """The first of `FOLDER_FORMATS` whose layout `path` has; None for a `datasets` folder.

    Raises:
        ValueError: If `path` matches no layout; the message lists every layout looked for.
    """
    path = Path(path)
    for folder_format in FOLDER_FORMATS:
        if folder_format.detect(path):
            return folder_format
    if is_datasets_folder(path):
        return None
    layouts = "; ".join(f"({n}) {layout}" for n, layout in enumerate([*(f.layout for f in FOLDER_FORMATS),
                                                                       _DATASETS_LAYOUT], start=1))  # fmt: skip
    raise ValueError(f"{path} matches no data set layout this package reads. Looked for: {layouts}.")
