"""The in-memory image record shared by every data source, its validation, and the bad-data policy.

A record describes one image in COCO terms, whatever the source (COCO folder, `datasets`, synthetic):

    {"image_id": int, "file_name": str, "width": int, "height": int,
     "annotations": [{"id": int, "bbox": [x, y, w, h], "category_id": int, "area": float, "iscrowd": int}]}

`bbox` is COCO `xywh` in pixels of the image *after* EXIF orientation, `category_id` is the data set's own id.
`file_name` is what error messages name (a path, or `<split>[row]` for images stored inside a data set).
Problems are handled by a `DataReport`: with `on_error="raise"` each one raises a `ValueError` naming the
file and the annotation id; with `on_error="skip"` it is logged, counted and the offending item dropped.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from image_processing.annotations import parse_object
from modeling_detr_custom.data.categories import CategoryMapping

__all__ = [
    "BAD_DATA_POLICIES",
    "BOX_TOLERANCE",
    "AnnotationRecord",
    "DataReport",
    "ImageRecord",
    "check_bad_data_policy",
    "check_integer_id",
    "validate_annotation",
    "validate_records",
]

logger = logging.getLogger(__name__)

# Boxes may overflow the image by this many pixels (rounding in annotation tools); they are clipped.
BOX_TOLERANCE = 1.0
# Individual problems logged in skip mode before only the final count is reported.
_MAX_LOGGED = 20


class AnnotationRecord(TypedDict):
    id: int
    bbox: list[float]
    category_id: int
    area: float
    iscrowd: int


class ImageRecord(TypedDict):
    image_id: int
    file_name: str
    width: int
    height: int
    annotations: list[AnnotationRecord]


BAD_DATA_POLICIES = ("raise", "skip")


def check_bad_data_policy(value: str, option: str = "on_error") -> None:
    """Raises a `ValueError` naming `option` unless `value` is one of `BAD_DATA_POLICIES`."""
    if value not in BAD_DATA_POLICIES:
        raise ValueError(f"{option} must be 'raise' or 'skip', got {value!r}.")


# Image ids become int64 columns and pycocotools keys; larger ids cannot be stored.
MAX_ID = 2**63 - 1


def check_integer_id(value: Any, where: str) -> int:
    """`value` as an int if it is an integer in [0, 2**63); else a `ValueError` naming `where`.

    Floats are refused even when they hold an integer: `int()` would silently truncate 1.5, and a string id would
    fail deep inside pyarrow or pycocotools.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_ID:
        shown = json.dumps(value) if isinstance(value, (str, int, float, type(None))) else repr(value)
        raise ValueError(f"{where} is {shown}; expected an integer in [0, 2**63).")
    return int(value)


class DataReport:
    """Applies the bad-data policy and counts what was skipped.

    Args:
        on_error: `"raise"` to stop at the first problem with a `ValueError`, `"skip"` to log it, drop the
            image or annotation, and continue.
        name: What is being loaded (source and split), used in the summary.

    Raises:
        ValueError: If `on_error` is not `"raise"` or `"skip"`.
    """

    def __init__(self, on_error: str = "raise", name: str = "") -> None:
        check_bad_data_policy(on_error)
        self.on_error = on_error
        self.name = name
        self.skipped_images = 0
        self.skipped_annotations = 0
        self.messages: list[str] = []

    def problem(self, message: str, skipped_images: int = 0, skipped_annotations: int = 0) -> None:
        """Raises `ValueError(message)`, or in skip mode records the problem and the items it drops."""
        if self.on_error == "raise":
            raise ValueError(message)
        self.skipped_images += skipped_images
        self.skipped_annotations += skipped_annotations
        self.messages.append(message)
        if len(self.messages) <= _MAX_LOGGED:
            logger.warning("Skipping bad data: %s", message)
        elif len(self.messages) == _MAX_LOGGED + 1:
            logger.warning("More bad data in %s; only the count is reported from now on.", self.name)

    def report(self) -> str:
        """A one-paragraph summary of what was skipped, or `""` when nothing was."""
        if not self.messages:
            return ""
        lines = [
            f"{self.name}: skipped {self.skipped_images} image(s) and {self.skipped_annotations} annotation(s) "
            f"because of {len(self.messages)} problem(s) (on_error='skip'):"
        ]
        lines += [f"  - {message}" for message in self.messages[:_MAX_LOGGED]]
        if len(self.messages) > _MAX_LOGGED:
            lines.append(f"  ... and {len(self.messages) - _MAX_LOGGED} more.")
        return "\n".join(lines)

    def __bool__(self) -> bool:
        return bool(self.messages)


def validate_annotation(
    annotation: dict[str, Any], width: int, height: int, file_name: str, mapping: CategoryMapping
) -> AnnotationRecord:
    """Checks one COCO annotation against its image and returns a clean copy (box clipped to the image).

    Args:
        annotation: COCO annotation with `id`, `bbox` (`xywh` pixels), `category_id`, optionally `area` and
            `iscrowd` (defaults: box area, 0).
        width: Image width in pixels (after EXIF orientation).
        height: Image height in pixels.
        file_name: Image file, named in error messages.
        mapping: The data set's categories; an unknown `category_id` is an error.

    Raises:
        ValueError: Unknown category, a malformed object (`image_processing.annotations.parse_object`, the one
            format check shared with the image processor), or a box outside the image by more than
            `BOX_TOLERANCE` pixels; the message names the file and the annotation id.
    """
    annotation_id = annotation.get("id") if isinstance(annotation, Mapping) else None
    where = f"Annotation {annotation_id} of image {file_name}"
    if isinstance(annotation, Mapping) and "category_id" in annotation:
        label = mapping.to_label(annotation["category_id"], annotation_id, file_name)
        annotation = {**annotation, "category_id": label}  # the format check below wants an int
    (x, y, w, h), _, area, iscrowd = parse_object(annotation, where)
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        raise ValueError(
            f"{where}: bbox {[x, y, w, h]} ([x, y, w, h]) lies outside the {width}x{height} image by more than "
            f"{BOX_TOLERANCE:g} px. Check that boxes are absolute pixels in xywh format for this image."
        )
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    return {
        "id": annotation_id,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "category_id": mapping.to_category_id(annotation["category_id"]),
        "area": area if annotation.get("area") is not None else (x1 - x0) * (y1 - y0),
        "iscrowd": iscrowd,
    }


def validate_records(records: Iterable[ImageRecord], mapping: CategoryMapping, report: DataReport) -> list[ImageRecord]:
    """Validates every annotation of every record; bad annotations raise or are dropped (skip mode).

    Images whose annotations were all dropped are kept (with fewer objects); images with no annotations at all
    are valid negative samples.
    """
    cleaned = []
    for record in records:
        annotations = []
        for annotation in record["annotations"]:
            try:
                annotations.append(
                    validate_annotation(annotation, record["width"], record["height"], record["file_name"], mapping)
                )
            except ValueError as error:
                report.problem(str(error), skipped_annotations=1)
        cleaned.append({**record, "annotations": annotations})
    return cleaned
