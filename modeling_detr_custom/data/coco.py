"""COCO-format folders: reading a split into records, and the in-memory `pycocotools` ground truth.

The folder layout is COCO's own, so `train2017`/`val2017` work as they are and the synthetic generator writes
the same::

    ROOT/annotations/instances_<split>.json
    ROOT/<split>/<file_name>          (file names as in the JSON `images` list)
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.records import DataReport, ImageRecord, check_integer_id

__all__ = [
    "build_coco_gt",
    "coco_annotation_file",
    "coco_splits",
    "is_coco_folder",
    "read_coco_annotation_file",
    "read_coco_json",
    "read_coco_split",
]


def is_coco_folder(path: str | Path) -> bool:
    """True if `path` is a folder with `annotations/instances_*.json`."""
    return any(Path(path).glob("annotations/instances_*.json"))


def coco_splits(root: str | Path) -> list[str]:
    """The splits of a COCO folder: the `<split>` of every `annotations/instances_<split>.json`, sorted."""
    return sorted(p.stem.removeprefix("instances_") for p in Path(root).glob("annotations/instances_*.json"))


def coco_annotation_file(root: str | Path, split: str) -> Path:
    """Path of `ROOT/annotations/instances_<split>.json`.

    Raises:
        FileNotFoundError: If it does not exist; the message lists the splits that do.
    """
    path = Path(root) / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        available = coco_splits(root)
        raise FileNotFoundError(
            f"No annotation file {path} for split {split!r}. Splits in {root}: {available or 'none'} "
            "(expected layout: annotations/instances_<split>.json and images under <split>/)."
        )
    return path


def read_coco_split(
    root: str | Path, split: str, report: DataReport
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]:
    """Reads one split of a COCO folder into records (image sizes as the JSON declares them).

    Annotations are not validated against their images here (see `records.validate_records`), but one that
    points at an image id missing from `images` is reported.

    Returns:
        The records, whose `file_name` is the image's full path; the categories sorted by id; the JSON's `info`
        dict (empty if absent).

    Raises:
        FileNotFoundError: If the annotation file is missing.
        ValueError: If the JSON lacks `images` or `categories`, repeats an image id, or (unless skipping)
            an annotation points at a missing image.
    """
    return read_coco_annotation_file(coco_annotation_file(root, split), [Path(root) / split, Path(root)], report)


def read_coco_annotation_file(
    annotation_file: Path,
    image_folders: Sequence[Path],
    report: DataReport,
    category_filter: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]:
    """Reads one COCO instances JSON into records; each image's `file_name` is looked up in `image_folders`, in
    order (the first folder is used for messages when the file is in none of them).

    Shared by COCO folders and Roboflow COCO exports (whose `category_filter` drops the export's placeholder
    category). Returns and raises as `read_coco_split`.
    """
    coco_json = read_coco_json(annotation_file)
    categories = coco_json["categories"] if category_filter is None else category_filter(coco_json["categories"])
    try:
        mapping = CategoryMapping.from_coco_categories(categories)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{annotation_file}: 'categories': {error}") from error
    annotations_by_image = _group_annotations(coco_json, annotation_file, report)
    records: list[ImageRecord] = []
    for image in coco_json["images"]:
        image_id = image.get("id")
        name = str(image.get("file_name"))
        path = next((folder / name for folder in image_folders if (folder / name).exists()), image_folders[0] / name)
        records.append(
            {
                "image_id": image_id,
                "file_name": str(path),
                "width": image.get("width"),
                "height": image.get("height"),
                "annotations": annotations_by_image.pop(image_id, []),
            }
        )
    info = coco_json.get("info")
    return records, mapping, info if isinstance(info, dict) else {}


def read_coco_json(annotation_file: Path) -> dict[str, Any]:
    """The parsed JSON, its structure checked: the errors name the file, the list, the entry and the field.

    Image ids must be integers in [0, 2**63) (a float or string id would be truncated or refused deep inside
    pyarrow), annotation ids integers or absent, and every entry of `images`, `annotations` and `categories` an
    object. `annotations` may be missing (a split without labels) but not null.
    """
    try:
        with annotation_file.open(encoding="utf-8") as f:
            coco_json = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotation_file} is not valid JSON: {error}") from error
    if not isinstance(coco_json, dict):
        raise ValueError(
            f"{annotation_file}: the JSON root is a {type(coco_json).__name__}; a COCO instances file is an object "
            "with 'images', 'annotations' and 'categories' lists."
        )
    for key in ("images", "categories", "annotations"):
        entries = coco_json.get(key, [] if key == "annotations" else None)
        if not isinstance(entries, list):
            found = "missing" if key not in coco_json else f"{json.dumps(entries)[:40]}"
            raise ValueError(f"{annotation_file}: {key!r} must be a list of objects, got {found}.")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"{annotation_file}: {key}[{index}] must be an object, got {json.dumps(entry)[:40]}.")
    for index, image in enumerate(coco_json["images"]):
        check_integer_id(image.get("id"), f"{annotation_file}: images[{index}] ({image.get('file_name')}) 'id'")
    for index, annotation in enumerate(coco_json.get("annotations", [])):
        where = f"{annotation_file}: annotations[{index}]"
        check_integer_id(annotation.get("image_id"), f"{where} 'image_id'")
        if annotation.get("id") is not None:
            check_integer_id(annotation["id"], f"{where} 'id'")
    return coco_json


def _group_annotations(
    coco_json: dict[str, Any], annotation_file: Path, report: DataReport
) -> dict[int, list[dict[str, Any]]]:
    image_ids = [image.get("id") for image in coco_json["images"]]
    if len(set(image_ids)) != len(image_ids):
        repeated = sorted({i for i in image_ids if image_ids.count(i) > 1})[:10]
        raise ValueError(f"{annotation_file}: image ids {repeated} appear more than once in 'images'.")
    known = set(image_ids)
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in coco_json.get("annotations", []):
        image_id = annotation.get("image_id")
        if image_id not in known:
            report.problem(
                f"Annotation {annotation.get('id')} in {annotation_file} points at image_id {image_id!r}, which "
                "is not in the file's 'images' list.",
                skipped_annotations=1,
            )
            continue
        grouped[image_id].append(annotation)
    return grouped


def build_coco_gt(records: Sequence[ImageRecord], mapping: CategoryMapping) -> COCO:
    """The `pycocotools` ground truth of a split, built in memory from validated records.

    Category ids are the data set's own. Annotation ids are kept when they are unique positive integers and
    renumbered 1..N otherwise (COCOeval treats an annotation id of 0 as "unmatched").
    """
    annotations = [dict(a, image_id=r["image_id"]) for r in records for a in r["annotations"]]
    ids = [a.get("id") for a in annotations]
    if not all(isinstance(i, int) and i > 0 for i in ids) or len(set(ids)) != len(ids):
        annotations = [dict(a, id=n, source_id=a.get("id")) for n, a in enumerate(annotations, start=1)]
    dataset = {
        "images": [
            {"id": r["image_id"], "file_name": r["file_name"], "width": r["width"], "height": r["height"]}
            for r in records
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in zip(mapping.category_ids, mapping.names)],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
