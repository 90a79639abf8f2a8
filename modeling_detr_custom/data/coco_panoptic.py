"""COCO panoptic folders: reading a split into records whose objects are the segments (things and stuff).

The layout is COCO's own (and what the synthetic generator writes)::

    ROOT/annotations/panoptic_<split>.json      images, annotations (file_name + segments_info), categories
    ROOT/annotations/panoptic_<split>/<png>     segment ids as RGB (id = R + 256 G + 256^2 B)
    ROOT/<split>/<file_name>                    the images (or ROOT/<split>2017 as COCO names them)

Each segment becomes one object record (`id` = its segment id, `bbox`, `category_id`, `area`, `iscrowd`), so the
detection pipeline (validation, boxes, the bbox ground truth) treats segments as objects; the masks are read from
the PNG when an image is loaded (`data.masks`). The categories keep `isthing` for the panoptic quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.coco import read_coco_json
from modeling_detr_custom.data.records import DataReport, ImageRecord

__all__ = ["PanopticGroundTruth", "panoptic_annotation_file", "panoptic_splits", "read_panoptic_split"]


@dataclass
class PanopticGroundTruth:
    """What the panoptic quality of a split is computed against.

    Attributes:
        categories: `{"id", "name", "isthing"}` per category (things and stuff), as `panoptic_<split>.json` has them.
        images: Per image id, the path of its PNG of segment ids and its `segments_info`.
    """

    categories: list[dict[str, Any]]
    images: dict[int, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def stuff_category_ids(self) -> set[int]:
        return {int(category["id"]) for category in self.categories if not category.get("isthing", 1)}


def panoptic_splits(root: str | Path) -> list[str]:
    """The `<split>` of every `annotations/panoptic_<split>.json`, sorted."""
    return sorted(p.stem.removeprefix("panoptic_") for p in Path(root).glob("annotations/panoptic_*.json"))


def panoptic_annotation_file(root: str | Path, split: str) -> Path:
    """Path of `ROOT/annotations/panoptic_<split>.json`.

    Raises:
        FileNotFoundError: If it does not exist; the message lists the panoptic splits that do.
    """
    path = Path(root) / "annotations" / f"panoptic_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"No panoptic annotation file {path} for split {split!r} (--task panoptic needs a COCO panoptic folder: "
            "annotations/panoptic_<split>.json, annotations/panoptic_<split>/*.png and <split>/ images); panoptic "
            f"splits in {root}: {panoptic_splits(root) or 'none'}."
        )
    return path


def read_panoptic_split(
    root: str | Path, split: str, report: DataReport
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any], PanopticGroundTruth]:
    """Reads one split of a COCO panoptic folder.

    Returns:
        The records (each image's `file_name` its full path, `panoptic_file` the full path of its PNG, one object
        per segment), the categories (things and stuff, sorted by id), the JSON's `info`, and the ground truth for
        `PanopticQualityEvaluator`.

    Raises:
        FileNotFoundError: the annotation file is missing.
        ValueError: malformed JSON (naming the file, the list and the entry), an annotation without `file_name`
            or `segments_info`, or (unless skipping) an annotation for an image not in `images`.
    """
    root = Path(root)
    annotation_file = panoptic_annotation_file(root, split)
    coco_json = read_coco_json(annotation_file)
    try:
        mapping = CategoryMapping.from_coco_categories(coco_json["categories"])
    except (ValueError, KeyError) as error:
        raise ValueError(f"{annotation_file}: 'categories': {error}") from error
    png_folder = root / "annotations" / f"panoptic_{split}"
    by_image = _annotations_by_image(coco_json, annotation_file, report)
    ground_truth = PanopticGroundTruth([dict(c) for c in coco_json["categories"]])
    records: list[ImageRecord] = []
    folders = [root / split, root / f"{split}2017", root]
    for image in coco_json["images"]:
        image_id, name = image.get("id"), str(image.get("file_name"))
        path = next((folder / name for folder in folders if (folder / name).exists()), folders[0] / name)
        annotation = by_image.get(image_id)
        segments = [] if annotation is None else annotation["segments_info"]
        png = "" if annotation is None else str(png_folder / annotation["file_name"])
        records.append(
            {
                "image_id": image_id,
                "file_name": str(path),
                "width": image.get("width"),
                "height": image.get("height"),
                "annotations": [_segment_object(segment) for segment in segments],
                "panoptic_file": png,
            }
        )
        ground_truth.images[int(image_id)] = (png, [dict(segment) for segment in segments])
    info = coco_json.get("info")
    return records, mapping, info if isinstance(info, dict) else {}, ground_truth


def _segment_object(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment as an object record; `id` stays the segment id, the key of its pixels in the PNG."""
    return {key: segment.get(key) for key in ("id", "bbox", "category_id", "area", "iscrowd")}


def _annotations_by_image(
    coco_json: dict[str, Any], annotation_file: Path, report: DataReport
) -> dict[int, dict[str, Any]]:
    known = {image.get("id") for image in coco_json["images"]}
    by_image = {}
    for index, annotation in enumerate(coco_json.get("annotations", [])):
        where = f"{annotation_file}: annotations[{index}]"
        if not isinstance(annotation.get("file_name"), str) or not isinstance(annotation.get("segments_info"), list):
            raise ValueError(f"{where} needs 'file_name' (its PNG) and a 'segments_info' list (COCO panoptic format).")
        for segment in annotation["segments_info"]:
            if not isinstance(segment, dict) or not isinstance(segment.get("id"), int) or "bbox" not in segment:
                raise ValueError(f"{where}: every entry of 'segments_info' needs an integer 'id' and a 'bbox'.")
        if annotation["image_id"] not in known:
            report.problem(
                f"{where} points at image_id {annotation['image_id']!r}, which is not in the file's 'images' list.",
                skipped_annotations=len(annotation["segments_info"]),
            )
            continue
        by_image[annotation["image_id"]] = annotation
    return by_image
