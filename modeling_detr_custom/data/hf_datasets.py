"""Data sets in the `datasets` object-detection schema (the `cppe-5` layout).

Columns: `image` (an `Image` feature), optionally `image_id`, `width`, `height`, and `objects` holding per
object `bbox` (COCO `xywh` pixels), `category` (or `categories`, as `imagefolder`'s `metadata.jsonl`
examples name it: a `ClassLabel`, integers or strings), and optionally `area`, `id`, `iscrowd`. Accepted
sources: anything `datasets.load_dataset` opens (a Hub name, a local `imagefolder` with `metadata.jsonl`) and
folders written by `DatasetDict.save_to_disk`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.records import ImageRecord, check_integer_id

__all__ = ["load_hf_split", "read_hf_split"]

logger = logging.getLogger(__name__)

_SPLIT_ALIASES = {"val": "validation", "validation": "val"}


def load_hf_split(source: str, split: str) -> datasets.Dataset:
    """Opens one split of a `datasets` source (`save_to_disk` folder, local folder or Hub name).

    Raises:
        ValueError: If the split does not exist; the message lists those that do.
    """
    path = Path(source)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(source)
    else:
        loaded = datasets.load_dataset(source)
    if isinstance(loaded, datasets.Dataset):
        logger.warning("%s holds a single data set without splits; using it for split %r.", source, split)
        return loaded
    for name in (split, _SPLIT_ALIASES.get(split)):
        if name in loaded:
            return loaded[name]
    raise ValueError(f"{source} has no split {split!r}; its splits are {sorted(loaded)}.")


def read_hf_split(
    dataset: datasets.Dataset, description: str, mapping: CategoryMapping | None = None
) -> tuple[list[ImageRecord], CategoryMapping]:
    """Reads the annotations of a `datasets` split into records, without decoding any image.

    Args:
        dataset: The split, with the columns described in the module docstring.
        description: Source and split, used in messages and as the file name of images without a path.
        mapping: Categories to use (e.g. those of the training split); default: from the data set
            (`ClassLabel` names, else the sorted distinct values).

    Returns:
        The records (`width`/`height` from the data set's columns, `None` when absent) and the categories.
        An annotation without `id` gets a running number (1-based, over the split).

    Raises:
        ValueError: If the `image` or `objects` column is missing.
    """
    for column in ("image", "objects"):
        if column not in dataset.column_names:
            raise ValueError(
                f"{description} has no {column!r} column (columns: {dataset.column_names}); an object-detection "
                "data set needs 'image' and 'objects' with 'bbox' (xywh) and 'category'."
            )
    meta = dataset.select_columns([c for c in ("image_id", "width", "height", "objects") if c in dataset.column_names])
    columns = meta.to_dict()
    objects = [_objects_as_list(o) for o in columns["objects"]]
    category_key = _category_key(dataset.features["objects"], objects, description)
    category_feature = _category_feature(dataset.features["objects"], category_key)
    if mapping is None:
        mapping = _mapping_from_data(category_feature, objects, category_key)
    name_to_id = dict(zip(mapping.names, mapping.category_ids))
    paths = _image_paths(dataset)
    records: list[ImageRecord] = []
    running_ids = itertools.count(1)
    for row, row_objects in enumerate(objects):
        records.append(
            {
                "image_id": (
                    check_integer_id(columns["image_id"][row], f"{description} row {row} 'image_id'")
                    if "image_id" in columns
                    else row
                ),
                "file_name": f"{paths[row]} ({description}, row {row})" if paths[row] else f"{description} row {row}",
                "width": columns["width"][row] if "width" in columns else None,
                "height": columns["height"][row] if "height" in columns else None,
                "annotations": [_annotation(obj, category_key, name_to_id, running_ids) for obj in row_objects],
            }
        )
    return records, mapping


def _annotation(
    obj: dict[str, Any], category_key: str, name_to_id: dict[str, int], running_ids: Iterator[int]
) -> dict[str, Any]:
    """One object as a COCO annotation; category names become ids, unknown names stay (and fail validation)."""
    category = obj.get(category_key)
    running_id = next(running_ids)
    return {
        "id": obj["id"] if obj.get("id") is not None else running_id,
        "bbox": obj.get("bbox"),
        "category_id": name_to_id.get(category, category) if isinstance(category, str) else category,
        "area": obj.get("area"),
        "iscrowd": obj.get("iscrowd", 0),
    }


def _objects_as_list(objects: Any) -> list[dict[str, Any]]:
    """`objects` as a list of per-object dicts, whether stored as a dict of lists or a list of dicts."""
    if objects is None:
        return []
    if isinstance(objects, dict):
        length = max((len(v) for v in objects.values() if isinstance(v, list)), default=0)
        return [
            {k: v[i] if isinstance(v, list) and i < len(v) else None for k, v in objects.items()} for i in range(length)
        ]
    return list(objects)


def _category_key(feature: Any, objects: list[list[dict[str, Any]]], description: str) -> str:
    keys = set(_object_fields(feature)) or {k for row in objects for obj in row for k in obj}
    for key in ("category", "categories", "category_id", "label"):
        if key in keys:
            return key
    raise ValueError(f"{description}: 'objects' has no 'category' field (fields: {sorted(keys)}).")


def _object_fields(feature: Any) -> dict[str, Any]:
    """Per-object field features, unwrapping `List`/`Sequence` on either side of the dict."""
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, dict):
        return {k: getattr(v, "feature", v) for k, v in inner.items()}
    return {}


def _category_feature(feature: Any, key: str) -> Any:
    return _object_fields(feature).get(key)


def _mapping_from_data(feature: Any, objects: list[list[dict[str, Any]]], key: str) -> CategoryMapping:
    if isinstance(feature, datasets.ClassLabel):
        return CategoryMapping.from_names(feature.names)
    values = {obj[key] for row in objects for obj in row if obj.get(key) is not None}
    if all(isinstance(v, str) for v in values):
        return CategoryMapping.from_names(sorted(values))
    return CategoryMapping(sorted(values))


def _image_paths(dataset: datasets.Dataset) -> list[str | None]:
    """The `path` of every image (for messages) without reading image bytes."""
    try:
        column = dataset.select_columns(["image"]).with_format("arrow")[:]["image"]
        return column.combine_chunks().field("path").to_pylist()
    except Exception:  # paths are a convenience for messages; schemas without them are fine
        return [None] * len(dataset)
