"""Write a COCO folder (e.g. the synthetic one) again in the other layouts users bring: Roboflow COCO export,
YOLO (Ultralytics or Roboflow layout) and Pascal VOC. Used by the data-format tests; boxes of the COCO folder must
be integers for VOC (its coordinates are integer pixel indices)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SPLIT_NAMES = {"train": "train", "val": "valid"}  # COCO split -> Roboflow folder


def read_coco(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def write_roboflow(coco_root: Path, out: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """`out/<train|valid>/_annotations.coco.json` beside the images, with Roboflow's placeholder category 0."""
    for split in splits:
        coco = read_coco(coco_root, split)
        folder = out / SPLIT_NAMES[split]
        folder.mkdir(parents=True)
        for image in coco["images"]:
            shutil.copy(coco_root / split / image["file_name"], folder / image["file_name"])
        categories = [{"id": 0, "name": "shapes-xyz", "supercategory": "none"}]
        categories += [{**c, "supercategory": "shapes-xyz"} for c in coco["categories"]]
        (folder / "_annotations.coco.json").write_text(json.dumps({**coco, "categories": categories}))
    return out


def write_yolo(coco_root: Path, out: Path, layout: str = "ultralytics", splits: tuple[str, ...] = ("train", "val"),
               names_file: str = "data.yaml") -> Path:  # fmt: skip
    """Labels as normalised `class cx cy w h` (class = position of the category in id order)."""
    names: list[str] = []
    for split in splits:
        coco = read_coco(coco_root, split)
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in categories]
        index = {c["id"]: i for i, c in enumerate(categories)}
        name = SPLIT_NAMES[split] if layout == "roboflow" else split
        images = out / name / "images" if layout == "roboflow" else out / "images" / name
        labels = out / name / "labels" if layout == "roboflow" else out / "labels" / name
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for image in coco["images"]:
            shutil.copy(coco_root / split / image["file_name"], images / image["file_name"])
            lines = []
            for a in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
                x, y, w, h = a["bbox"]
                cx, cy = (x + w / 2) / image["width"], (y + h / 2) / image["height"]
                lines.append(f"{index[a['category_id']]} {cx!r} {cy!r} {w / image['width']!r} {h / image['height']!r}")
            (labels / Path(image["file_name"]).with_suffix(".txt")).write_text("".join(f"{line}\n" for line in lines))
    if names_file == "classes.txt":
        (out / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    else:
        entries = {split: f"../{SPLIT_NAMES[split]}/images" if layout == "roboflow" else f"images/{split}"
                   for split in splits}  # fmt: skip
        yaml_lines = [f"{'val' if split == 'val' else split}: {entry}" for split, entry in entries.items()]
        (out / names_file).write_text("\n".join([*yaml_lines, f"nc: {len(names)}", f"names: {json.dumps(names)}"]))
    return out


def write_voc(coco_root: Path, out: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """`Annotations/*.xml` (1-based inclusive corners), `JPEGImages/`, `ImageSets/Main/<split>.txt`."""
    (out / "Annotations").mkdir(parents=True)
    (out / "JPEGImages").mkdir()
    (out / "ImageSets" / "Main").mkdir(parents=True)
    for split in splits:
        coco = read_coco(coco_root, split)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        ids = []
        for image in coco["images"]:
            voc_id = f"{split}_{Path(image['file_name']).stem}"
            ids.append(voc_id)
            shutil.copy(coco_root / split / image["file_name"], out / "JPEGImages" / f"{voc_id}.png")
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0] + 1}</xmin><ymin>{a['bbox'][1] + 1}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]}</ymax>"
                "</bndbox></object>"
                for a in coco["annotations"]
                if a["image_id"] == image["id"]
            )
            (out / "Annotations" / f"{voc_id}.xml").write_text(
                f"<annotation><filename>{voc_id}.png</filename><size><width>{image['width']}</width>"
                f"<height>{image['height']}</height><depth>3</depth></size>{objects}</annotation>"
            )
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return out
