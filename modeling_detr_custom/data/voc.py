"""Pascal VOC folders: one XML file per image, splits as lists of image ids.

    ROOT/Annotations/<id>.xml          <size>, <filename>, and per <object>: <name>, <difficult>, <bndbox>
    ROOT/JPEGImages/<id>.jpg           (or the XML's <filename>)
    ROOT/ImageSets/Main/<split>.txt    one id per line (train, val, trainval, test)

Classes are the sorted distinct object names over every XML file of the folder, so every split of a folder gets
the same labels. VOC coordinates are 1-based pixel indices, both ends included (`xmin=1, xmax=W` is the whole
width); as detectron2 reads them, the box is `[xmin - 1, ymin - 1, xmax, ymax]` in continuous pixel coordinates,
so COCO `xywh` is `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`. Objects marked `<difficult>1` become
`iscrowd=1`: not a training target, and ignored (neither found nor missed) by the COCO evaluation, as the VOC
protocol ignores them. Image ids are the 1-based positions of the ids in the sorted list of all XML files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.records import DataReport, ImageRecord

__all__ = ["is_voc_folder", "read_voc_split", "voc_box_to_xywh", "voc_splits"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_CLASS_SPLIT_SUFFIXES = ("_train", "_val", "_trainval", "_test")  # VOC's per-class lists (`dog_train.txt`)


def is_voc_folder(path: str | Path) -> bool:
    """True if `path` has `Annotations/*.xml`."""
    return any(Path(path).glob("Annotations/*.xml"))


def voc_box_to_xywh(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    """A VOC box (1-based, inclusive pixel indices) as COCO `[x, y, w, h]` in continuous pixel coordinates."""
    return [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]


def voc_splits(root: str | Path) -> list[str]:
    """The split lists of `ImageSets/Main` (VOC's per-class lists such as `dog_train.txt` left out), sorted."""
    stems = (path.stem for path in Path(root).glob("ImageSets/Main/*.txt"))
    return sorted(stem for stem in stems if not stem.endswith(_CLASS_SPLIT_SUFFIXES))


def read_voc_split(
    root: str | Path, split: str, report: DataReport
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]:
    """Reads the images listed in `ImageSets/Main/<split>.txt` into records.

    Raises:
        FileNotFoundError: If the split list is missing (the message lists the splits there are).
        ValueError: With `on_error="raise"`, the first unreadable XML or object without a name or a numeric box,
            naming the XML file (and the object's position in it).
    """
    root = Path(root)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"No split list {split_file} in the Pascal VOC folder {root}. Splits there: {voc_splits(root) or 'none'}."
        )
    all_ids = sorted(path.stem for path in (root / "Annotations").glob("*.xml"))
    parsed = {image_id: _parse_xml(root / "Annotations" / f"{image_id}.xml") for image_id in all_ids}
    mapping = CategoryMapping.from_names(_class_names(tuple((i, p) for i, p in parsed.items() if isinstance(p, dict))))
    position = {image_id: index for index, image_id in enumerate(all_ids, start=1)}
    wanted = [line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    records: list[ImageRecord] = []
    annotation_id = 0
    for voc_id in wanted:
        xml_path = root / "Annotations" / f"{voc_id}.xml"
        content = parsed.get(voc_id, FileNotFoundError(f"{xml_path} does not exist (listed in {split_file})."))
        if isinstance(content, Exception):
            report.problem(str(content), skipped_images=1)
            continue
        annotations = []
        for index, obj in enumerate(content["objects"]):
            if isinstance(obj, str):
                report.problem(f"{xml_path}: <object> {index + 1}: {obj}", skipped_annotations=1)
                continue
            annotation_id += 1
            fields = {key: value for key, value in obj.items() if key != "name"}
            annotations.append({**fields, "id": annotation_id, "category_id": mapping.label2id[obj["name"]]})
        records.append(
            {
                "image_id": position[voc_id],
                "file_name": str(_image_path(root, voc_id, content["filename"])),
                "width": content["width"],
                "height": content["height"],
                "annotations": annotations,
            }
        )
    return records, mapping, {}


def _class_names(parsed: tuple[tuple[str, dict[str, Any]], ...]) -> list[str]:
    names = {obj["name"] for _, content in parsed for obj in content["objects"] if isinstance(obj, dict)}
    if not names:
        raise ValueError("The Pascal VOC folder's Annotations/*.xml name no objects, so there are no classes.")
    return sorted(names)


def _parse_xml(path: Path) -> dict[str, Any] | ValueError:
    """`{"filename", "width", "height", "objects": [dict | error message]}`, or the error for an unreadable file."""
    try:
        tree = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        return ValueError(f"{path} is not readable XML: {error}")
    width, height = _int_or_none(tree.findtext("size/width")), _int_or_none(tree.findtext("size/height"))
    return {
        "filename": (tree.findtext("filename") or "").strip(),
        # VOC tools write 0 when they do not know the size; the image header gives it then.
        "width": width if width and height else None,
        "height": height if width and height else None,
        "objects": [_parse_object(obj) for obj in tree.findall("object")],
    }


def _parse_object(obj: ElementTree.Element) -> dict[str, Any] | str:
    name = (obj.findtext("name") or "").strip()
    if not name:
        return "has no <name>."
    values = [obj.findtext(f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
    try:
        xmin, ymin, xmax, ymax = (float(value) for value in values)
    except (TypeError, ValueError):
        return f"({name}) needs numeric <bndbox> xmin, ymin, xmax, ymax; got {values}."
    difficult = (obj.findtext("difficult") or "0").strip()
    return {
        "name": name,
        "bbox": voc_box_to_xywh(xmin, ymin, xmax, ymax),
        "area": None,
        "iscrowd": 1 if difficult == "1" else 0,
    }


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _image_path(root: Path, voc_id: str, filename: str) -> Path:
    folder = root / "JPEGImages"
    candidates = [folder / filename] if filename else []
    candidates += [folder / f"{voc_id}{suffix}" for suffix in _IMAGE_SUFFIXES]
    return next((path for path in candidates if path.is_file()), candidates[0])
