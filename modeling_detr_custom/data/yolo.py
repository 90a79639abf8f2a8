"""YOLO (Darknet / Ultralytics) label folders: one text file per image, normalised `class cx cy w h` per line.

Class names come from `data.yaml` (`names:` as a list or an `{index: name}` mapping; `nc:` checked if present;
`path:` and the `train:`/`val:`/`test:` entries say where each split's images are) or from `classes.txt` (one
name per line). Without split entries, the images of a split are looked for under the usual layouts:

    ROOT/images/<split>/*.jpg   ROOT/labels/<split>/*.txt        (Ultralytics)
    ROOT/<split>/images/*.jpg   ROOT/<split>/labels/*.txt        (Roboflow's YOLO export)

`val`, `valid` and `validation` stand for each other. The label file of `.../images/a/b.jpg` is
`.../labels/a/b.txt` (the last `images` folder of the path replaced by `labels`, as Ultralytics does). An empty
label file, or none at all, is an image without objects. A line with more than 5 numbers is a segmentation
polygon (`class x1 y1 x2 y2 ...`); its box is the polygon's extent, as Ultralytics trains detection on it.

Boxes are converted to COCO `xywh` pixels of the image after EXIF orientation:
`x = (cx - w / 2) * width`, `y = (cy - h / 2) * height`, `w * width`, `h * height`.
Image ids are the images' 1-based positions in the sorted file list of the split; annotation ids run 1..N.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import yaml

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.images import image_size
from modeling_detr_custom.data.records import BOX_TOLERANCE, DataReport, ImageRecord

__all__ = ["IMAGE_EXTENSIONS", "is_yolo_folder", "read_yolo_split", "yolo_box_to_xywh", "yolo_splits"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
_SPLIT_ALIASES = {"val": ("valid", "validation"), "valid": ("val", "validation"), "validation": ("val", "valid")}
_KNOWN_SPLITS = ("train", "val", "valid", "validation", "test")


def is_yolo_folder(path: str | Path) -> bool:
    """True if `path` holds a `data.yaml` (or `data.yml`, `dataset.yaml`) or a `classes.txt`."""
    return any((Path(path) / name).is_file() for name in (*_YAML_NAMES, "classes.txt"))


def yolo_box_to_xywh(cx: float, cy: float, w: float, h: float, width: int, height: int) -> list[float]:
    """A normalised YOLO box `(cx, cy, w, h)` as COCO `[x, y, w, h]` pixels of a `width` x `height` image."""
    return [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]


def yolo_splits(root: str | Path) -> list[str]:
    """The splits a YOLO folder has: its `data.yaml` split entries, else the layout folders that exist."""
    root = Path(root)
    config = _read_yaml(root)
    named = [split for split in _KNOWN_SPLITS if config.get(split)]
    if named:
        return named
    return [s for s in _KNOWN_SPLITS if (root / "images" / s).is_dir() or (root / s / "images").is_dir()]


def read_yolo_split(
    root: str | Path, split: str, report: DataReport
) -> tuple[list[ImageRecord], CategoryMapping, dict[str, Any]]:
    """Reads one split of a YOLO folder into records (sizes read from the image headers, boxes in pixels).

    Returns:
        The records, the categories (ids = class indices), and an empty `info` dict.

    Raises:
        FileNotFoundError: If the split's image folder does not exist; the message lists where it was looked for.
        ValueError: Malformed `data.yaml`/`classes.txt`; with `on_error="raise"`, the first malformed label line
            (naming the label file and line), a class index without a name, or a box outside its image.
    """
    root = Path(root)
    mapping = _read_names(root)
    images = _split_images(root, split)
    records: list[ImageRecord] = []
    annotation_id, missing_labels = 0, 0
    for image_id, image_path in enumerate(images, start=1):
        label_path = label_file_of(image_path)
        record: ImageRecord = {
            "image_id": image_id, "file_name": str(image_path), "width": None, "height": None, "annotations": [],
        }  # fmt: skip
        records.append(record)
        if not label_path.is_file():
            missing_labels += 1
            continue
        lines = [(number, line) for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]  # fmt: skip
        try:
            width, height = image_size(image_path)
        except ValueError:
            # The image check that follows reports the image (and skips or raises); its objects are counted there.
            record["annotations"] = [{"id": annotation_id + i, "bbox": None} for i in range(1, len(lines) + 1)]
            annotation_id += len(lines)
            continue
        record["width"], record["height"] = width, height
        for line_number, line in lines:
            try:
                bbox, class_index = _parse_line(line, width, height, mapping)
            except ValueError as error:
                report.problem(f"{label_path}:{line_number} (image {image_path}): {error}", skipped_annotations=1)
                continue
            annotation_id += 1
            record["annotations"].append(
                {"id": annotation_id, "bbox": bbox, "category_id": class_index, "area": None, "iscrowd": 0}
            )
    if missing_labels:
        logger.info("%s [%s]: %d image(s) have no label file; they count as images without objects.", root, split,
                    missing_labels)  # fmt: skip
    return records, mapping, {}


def label_file_of(image_path: Path) -> Path:
    """`.../images/a/b.jpg` -> `.../labels/a/b.txt` (the last `images` component); else `b.txt` beside the image."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def _parse_line(line: str, width: int, height: int, mapping: CategoryMapping) -> tuple[list[float], int]:
    """`class cx cy w h` (or `class x1 y1 x2 y2 ...`, a polygon) -> (`[x, y, w, h]` pixels, class index)."""
    tokens = line.split()
    try:
        numbers = [float(token) for token in tokens]
    except ValueError:
        raise ValueError(f"{line.strip()!r} is not numbers; expected 'class cx cy w h' (normalised).") from None
    if len(numbers) != 5 and (len(numbers) < 7 or len(numbers) % 2 == 0):
        raise ValueError(
            f"{line.strip()!r} has {len(numbers)} values; expected 'class cx cy w h' (5) or a polygon "
            "'class x1 y1 x2 y2 x3 y3 ...' (an odd number, at least 7)."
        )
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"{line.strip()!r} holds a value that is not finite.")
    if numbers[0] != int(numbers[0]) or int(numbers[0]) not in mapping.category_ids:
        raise ValueError(
            f"class {tokens[0]!r} is not one of the {mapping.num_labels} class indices 0..{mapping.num_labels - 1} "
            "that the names define."
        )
    if len(numbers) == 5:
        cx, cy, w, h = numbers[1:]
    else:
        xs, ys = numbers[1::2], numbers[2::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    bbox = yolo_box_to_xywh(cx, cy, w, h, width, height)
    x, y, bw, bh = bbox
    if bw <= 0 or bh <= 0:
        raise ValueError(f"box {numbers[1:5]} has a width or height that is not positive.")
    tolerance = BOX_TOLERANCE
    if x < -tolerance or y < -tolerance or x + bw > width + tolerance or y + bh > height + tolerance:
        raise ValueError(
            f"box (cx, cy, w, h) = {numbers[1:5]} lies outside the {width}x{height} image; YOLO boxes are centre "
            "and size normalised to [0, 1] by the image's width and height."
        )
    return bbox, int(numbers[0])


def _read_yaml(root: Path) -> dict[str, Any]:
    for name in _YAML_NAMES:
        path = root / name
        if path.is_file():
            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                raise ValueError(f"{path} is not valid YAML: {error}") from error
            if not isinstance(config, dict):
                raise ValueError(f"{path} must be a mapping with 'names' (and 'train', 'val', ...).")
            return {**config, "__file__": path}
    return {}


def _read_names(root: Path) -> CategoryMapping:
    config = _read_yaml(root)
    if config:
        return _names_from_yaml(config)
    path = root / "classes.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} lists no class names (one name per line, line 1 = class 0).")
    return CategoryMapping.from_names(names)


def _names_from_yaml(config: dict[str, Any]) -> CategoryMapping:
    path, names = config["__file__"], config.get("names")
    if isinstance(names, dict):
        if not all(isinstance(key, int) for key in names):
            raise ValueError(f"{path}: the keys of 'names' must be class indices (0, 1, ...); got {list(names)}.")
        mapping = CategoryMapping(sorted(names), [str(names[key]) for key in sorted(names)])
    elif isinstance(names, list) and names:
        mapping = CategoryMapping.from_names([str(name) for name in names])
    else:
        raise ValueError(f"{path}: 'names' must be a list of class names or an {{index: name}} mapping; got {names!r}.")
    if "nc" in config and config["nc"] != mapping.num_labels:
        raise ValueError(f"{path}: 'nc' is {config['nc']!r} but 'names' has {mapping.num_labels} entries.")
    return mapping


def _split_images(root: Path, split: str) -> list[Path]:
    """The sorted image files of `split`, from `data.yaml`'s entry for it or the usual layouts."""
    names = (split, *_SPLIT_ALIASES.get(split, ()))
    config = _read_yaml(root)
    looked: list[Path] = []
    entry = next((config[name] for name in names if config.get(name)), None)
    if entry is not None:
        folders = [_resolve_entry(config, item, looked) for item in (entry if isinstance(entry, list) else [entry])]
        if all(folder is not None for folder in folders):
            return sorted({image for folder in folders for image in _images_of(folder)})
    else:
        for name in names:
            for candidate in (root / "images" / name, root / name / "images"):
                looked.append(candidate)
                if candidate.is_dir():
                    return _images_of(candidate)
    available = yolo_splits(root)
    raise FileNotFoundError(
        f"No images for split {split!r} in the YOLO folder {root}: looked for {', '.join(map(str, looked))}. "
        f"Splits there: {available or 'none'}."
    )


def _resolve_entry(config: dict[str, Any], entry: Any, looked: list[Path]) -> Path | None:
    """A `data.yaml` split entry as an existing folder or list file: relative to `path:` (itself relative to the
    YAML's folder), to the YAML's folder, and, for Roboflow's `../train/images`, inside the YAML's folder."""
    yaml_dir = config["__file__"].parent
    base = yaml_dir / str(config["path"]) if config.get("path") else yaml_dir
    entry = str(entry)
    for candidate in (base / entry, yaml_dir / entry, yaml_dir / entry.removeprefix("../")):
        looked.append(candidate)
        if candidate.exists():
            return candidate
    return None


def _images_of(location: Path) -> list[Path]:
    """Image files under a folder (recursively), or listed one per line in a `.txt` file; sorted."""
    if location.is_file():
        lines = [line.strip() for line in location.read_text(encoding="utf-8").splitlines() if line.strip()]
        return sorted(path if path.is_absolute() else location.parent / path for path in map(Path, lines))
    return sorted(path for path in location.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
