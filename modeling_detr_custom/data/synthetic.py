"""A synthetic shapes data set in COCO format: the built-in default of the scripts, the tests and `make demo`.

Three classes (COCO category ids 1, 2, 3): `rectangle`, `ellipse`, `triangle` (six with `num_classes=6`:
`diamond` yellow, `cross` purple, `ring` cyan as well), drawn in filled colours on
textured backgrounds (smooth noise, gradients or stripes). Each image holds 0 to `max_objects` shapes (about
10% hold none: negative samples) whose sides are 10-50% of the image side; shapes may overlap, but a placement
that would hide more than half of an earlier shape is rejected, and every box is the *visible* extent of its
shape, so no annotation describes something that cannot be seen. The harder setting of `docs/demo_measurements.md`,
`synthetic:image_size=256,max_objects=12,num_classes=6,occlusion=1`, packs up to 12 shapes of 6 classes and lets
a shape be three-quarters hidden.

Learnability is deliberate, because the data set is what shows that a small DETR trains on a CPU in minutes:
each class has its own hue family (rectangles red-orange, ellipses green, triangles blue; saturated, varied in
hue, saturation and brightness) and backgrounds are desaturated, so class and extent are visible at low
resolution; the shapes themselves also differ, so the model can use either cue.

For segmentation, every object also carries its visible pixels as a COCO RLE `segmentation` in
`instances_<split>.json`, and the split is written in COCO panoptic format: `annotations/panoptic_<split>.json`
and `annotations/panoptic_<split>/NNNNNN.png` (segment ids as RGB), with the shapes as things (ids 1-3) and the
background as one stuff segment whose category is its texture (`noise` 4, `gradient` 5, `stripes` 6).

Everything is a function of the seed: image `i` of a split draws from `numpy.random.default_rng((seed,
split, i))`, so changing the number of training images does not change the validation images.

    python -m modeling_detr_custom.data.synthetic OUT_DIR --num-train 1000 --num-val 200 --image-size 128 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

__all__ = [
    "CATEGORIES",
    "PANOPTIC_CATEGORIES",
    "panoptic_categories",
    "SyntheticSpec",
    "ensure_synthetic_dataset",
    "generate_panoptic_image",
    "generate_image",
    "synthetic_cache_dir",
    "write_synthetic_dataset",
]

# Bump when the generator's output changes, so cached data sets are regenerated (2: masks and panoptic files).
GENERATOR_VERSION = 2

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
# The harder setting (`num_classes=6`) adds three shapes, each with a hue family of its own.
EXTRA_CATEGORIES = [
    {"id": 4, "name": "diamond", "supercategory": "shape"},
    {"id": 5, "name": "cross", "supercategory": "shape"},
    {"id": 6, "name": "ring", "supercategory": "shape"},
]
# Stuff (the background textures, in the order `_background` draws their kind), numbered after the shapes.
_STUFF_NAMES = ("noise", "gradient", "stripes")


def panoptic_categories(categories: list[dict] | None = None) -> list[dict]:
    """Things (the shapes of `categories`, the default three if None) and stuff (the background textures)."""
    things = [{**category, "isthing": 1} for category in (categories or CATEGORIES)]
    stuff = [
        {"id": len(things) + 1 + kind, "name": name, "supercategory": "background", "isthing": 0}
        for kind, name in enumerate(_STUFF_NAMES)
    ]
    return things + stuff


PANOPTIC_CATEGORIES = panoptic_categories()  # of the default data set (3 shapes, stuff ids 4-6)
# Hue range (fraction of the colour wheel) of each category id.
_HUES = {1: (0.97, 1.08), 2: (0.25, 0.42), 3: (0.55, 0.68), 4: (0.12, 0.18), 5: (0.76, 0.86), 6: (0.46, 0.51)}
# Least visible fraction of an earlier shape a new one may leave, by `occlusion` level: 0 (the default) keeps
# every shape at least half visible, 1 lets a shape be three-quarters hidden (the harder setting).
_MIN_VISIBLE_FRACTIONS = (0.5, 0.25)
_SPLITS = {"train": 0, "val": 1}
_EMPTY_IMAGE_PROBABILITY = 0.1
_PLACEMENT_TRIES = 10


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic data set; `source` strings such as `synthetic:num_train=64,seed=1` set them."""

    num_train: int = 1000
    num_val: int = 200
    image_size: int = 128
    seed: int = 0
    max_objects: int = 4
    num_classes: int = 3
    occlusion: int = 0

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError(f"Image counts must be >= 0, got num_train={self.num_train}, num_val={self.num_val}.")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {self.image_size}.")
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {self.max_objects}.")
        if self.num_classes not in (3, 6):
            raise ValueError(f"num_classes must be 3 or 6, got {self.num_classes}.")
        if self.occlusion not in range(len(_MIN_VISIBLE_FRACTIONS)):
            raise ValueError(
                f"occlusion must be 0 (shapes at least half visible) or 1 (a quarter), got {self.occlusion}."
            )

    @property
    def categories(self) -> list[dict[str, Any]]:
        """The COCO categories of this data set (the first `num_classes` shapes)."""
        return (CATEGORIES + EXTRA_CATEGORIES)[: self.num_classes]

    @classmethod
    def from_source(cls, source: str) -> SyntheticSpec:
        """Parses `synthetic` or `synthetic:key=value,...` (keys: the fields of this class).

        Raises:
            ValueError: For another source, an unknown key or a non-integer value.
        """
        name, _, options = source.partition(":")
        if name != "synthetic":
            raise ValueError(f"Not a synthetic source: {source!r}.")
        known = {f.name for f in fields(cls)}
        values: dict[str, int] = {}
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key.strip() not in known or not value.strip().lstrip("-").isdigit():
                raise ValueError(f"Bad option {option!r} in {source!r}; use key=integer with keys {sorted(known)}.")
            values[key.strip()] = int(value)
        return cls(**values)

    def folder_name(self) -> str:
        return (
            f"synthetic-v{GENERATOR_VERSION}-train{self.num_train}-val{self.num_val}-size{self.image_size}"
            f"-obj{self.max_objects}-seed{self.seed}"
            + (f"-cls{self.num_classes}" if self.num_classes != 3 else "")
            + (f"-occ{self.occlusion}" if self.occlusion else "")
        )


def synthetic_cache_dir(spec: SyntheticSpec) -> Path:
    """`$DETR_CUSTOM_CACHE/<spec folder>`, default `~/.cache/detr_custom/<spec folder>`."""
    base = os.environ.get("DETR_CUSTOM_CACHE") or Path.home() / ".cache" / "detr_custom"
    return Path(base) / spec.folder_name()


def ensure_synthetic_dataset(spec: SyntheticSpec, folder: str | Path | None = None) -> Path:
    """Returns the folder of the data set, generating it on first use.

    Generation writes into a temporary sibling folder that is renamed into place when complete, so concurrent
    processes and interrupted runs never see a half-written data set.
    """
    folder = Path(folder) if folder is not None else synthetic_cache_dir(spec)
    if (folder / "annotations" / "instances_val.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write_synthetic_dataset(temporary, spec)
        os.rename(temporary, folder)
    except OSError:
        if not (folder / "annotations" / "instances_val.json").is_file():
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # left over only when another process won the race
    return folder


def write_synthetic_dataset(out_dir: str | Path, spec: SyntheticSpec) -> Path:
    """Writes `annotations/instances_{train,val}.json`, `{train,val}/NNNNNN.png`, and the panoptic annotations
    `annotations/panoptic_{train,val}.json` + `annotations/panoptic_{train,val}/NNNNNN.png` under `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        coco, panoptic = _write_split(out_dir, split, count, spec)
        with (out_dir / "annotations" / f"panoptic_{split}.json").open("w") as f:
            json.dump(panoptic, f)
        with (out_dir / "annotations" / f"instances_{split}.json").open("w") as f:  # last: marks completion
            json.dump(coco, f)
    return out_dir


def _write_split(out_dir: Path, split: str, count: int, spec: SyntheticSpec) -> tuple[dict, dict]:
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations" / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
    images, annotations, panoptic_annotations, writes = [], [], [], []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # PNG encoding drops the GIL
        for index in range(count):
            rng = np.random.default_rng((spec.seed, _SPLITS[split], index))
            pixels, objects, segment_ids, stuff_id = generate_panoptic_image(
                rng, spec.image_size, spec.max_objects, spec.num_classes, spec.occlusion
            )
            file_name = f"{index + 1:06d}.png"
            writes.append(pool.submit(Image.fromarray(pixels).save, out_dir / split / file_name, compress_level=1))
            id_png = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], -1).astype(np.uint8)
            png_path = out_dir / "annotations" / f"panoptic_{split}" / file_name
            writes.append(pool.submit(Image.fromarray(id_png).save, png_path, compress_level=1))
            images.append(
                {"id": index + 1, "file_name": file_name, "width": spec.image_size, "height": spec.image_size}
            )
            segments_info = []
            for segment_id, obj in enumerate(objects, start=1):
                mask = obj.pop("mask")
                rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": index + 1, "iscrowd": 0, **obj, "segmentation": rle}
                )
                segments_info.append({"id": segment_id, "iscrowd": 0, **obj})
            background = segment_ids == len(objects) + 1
            if background.any():
                ys, xs = np.nonzero(background)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                segments_info.append(
                    {"id": len(objects) + 1, "category_id": stuff_id, "iscrowd": 0, "bbox": bbox,
                     "area": int(background.sum())}
                )  # fmt: skip
            panoptic_annotations.append({"image_id": index + 1, "file_name": file_name, "segments_info": segments_info})
        for write in writes:
            write.result()  # re-raises a failed write (e.g. disk full)
    info = {"description": "detr-custom synthetic shapes", "generator_version": GENERATOR_VERSION, **asdict(spec)}
    coco = {"info": info, "images": images, "annotations": annotations, "categories": spec.categories}
    panoptic_cats = panoptic_categories(spec.categories)
    panoptic = {"info": info, "images": images, "annotations": panoptic_annotations, "categories": panoptic_cats}
    return coco, panoptic


def generate_image(
    rng: np.random.Generator, image_size: int, max_objects: int, num_classes: int = 3, occlusion: int = 0
) -> tuple[np.ndarray, list[dict]]:
    """Draws one image (`num_classes` and `occlusion` as in `SyntheticSpec`; the defaults draw the same images
    as before they existed).

    Returns:
        The pixels `(image_size, image_size, 3)` uint8, and per visible shape a dict with `category_id`,
        `bbox` (COCO `[x, y, w, h]` of its visible pixels) and `area` (visible pixel count).
    """
    pixels, objects, _, _ = generate_panoptic_image(rng, image_size, max_objects, num_classes, occlusion)
    return pixels, [{key: value for key, value in obj.items() if key != "mask"} for obj in objects]


def generate_panoptic_image(
    rng: np.random.Generator, image_size: int, max_objects: int, num_classes: int = 3, occlusion: int = 0
) -> tuple[np.ndarray, list[dict], np.ndarray, int]:
    """Draws one image with its panoptic segmentation (the same pixels as `generate_image` for the same `rng`).

    Returns:
        The pixels; per visible shape `category_id`, `bbox`, `area` and `mask` (`(size, size)` bool, its visible
        pixels); the segment ids `(size, size)` int64 (shape `i` is `i + 1`, the background `len(shapes) + 1`);
        and the background's stuff category id.
    """
    pixels, background_kind = _background(rng, image_size)
    owner = np.full((image_size, image_size), -1, dtype=np.int16)  # index of the shape owning each pixel
    shapes: list[tuple[int, np.ndarray]] = []  # (category id, RGB colour)
    empty = rng.random() < _EMPTY_IMAGE_PROBABILITY or max_objects == 0
    for _ in range(0 if empty else int(rng.integers(1, max_objects + 1))):
        category_id = int(rng.integers(1, num_classes + 1))
        if _place_shape(rng, owner, category_id, len(shapes), _MIN_VISIBLE_FRACTIONS[occlusion]):
            shapes.append((category_id, _shape_colour(rng, category_id)))
    objects = []
    for index, (category_id, colour) in enumerate(shapes):
        visible = owner == index
        pixels[visible] = colour
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        objects.append({"category_id": category_id, "bbox": bbox, "area": int(visible.sum()), "mask": visible})
    pixels += 4.0 * rng.standard_normal(pixels.shape, dtype=np.float32)  # a little sensor noise everywhere
    segment_ids = np.where(owner >= 0, owner.astype(np.int64) + 1, len(shapes) + 1)
    return np.clip(pixels, 0, 255).astype(np.uint8), objects, segment_ids, num_classes + 1 + background_kind


def _place_shape(rng: np.random.Generator, owner: np.ndarray, category_id: int, index: int, min_visible: float) -> bool:
    """Draws a shape into `owner` unless every try would hide most of an earlier shape."""
    size = owner.shape[0]
    for _ in range(_PLACEMENT_TRIES):
        width, height = (int(v) for v in rng.integers(max(int(0.1 * size), 4), int(0.5 * size) + 1, size=2))
        x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
        mask = _shape_mask(rng, category_id, width, height)
        region = owner[y : y + height, x : x + width]  # view: writes go into `owner`
        covered = region[mask]
        if _hides_too_much(owner, covered, min_visible):
            continue
        region[mask] = index
        return True
    return False


def _hides_too_much(owner: np.ndarray, covered: np.ndarray, min_visible: float) -> bool:
    """True if covering these pixels would leave less than `min_visible` of an earlier shape visible."""
    hidden_ids, hidden_counts = np.unique(covered[covered >= 0], return_counts=True)
    for shape_id, hidden in zip(hidden_ids, hidden_counts):
        visible = np.count_nonzero(owner == shape_id)
        if visible - hidden < min_visible * visible:
            return True
    return False


def _shape_mask(rng: np.random.Generator, category_id: int, width: int, height: int) -> np.ndarray:
    """Boolean mask `(height, width)` of the category's shape filling the box."""
    if category_id == 1:
        return np.ones((height, width), dtype=bool)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    w, h = width - 1, height - 1
    if category_id == 2:
        draw.ellipse([0, 0, w, h], fill=1)
    elif category_id == 4:  # diamond: the four side midpoints
        draw.polygon([(w / 2, 0), (w, h / 2), (w / 2, h), (0, h / 2)], fill=1)
    elif category_id == 5:  # cross: two bars a third of the side thick
        draw.rectangle([w / 3, 0, 2 * w / 3, h], fill=1)
        draw.rectangle([0, h / 3, w, 2 * h / 3], fill=1)
    elif category_id == 6:  # ring: an ellipse with a hole half its size
        draw.ellipse([0, 0, w, h], fill=1)
        draw.ellipse([w / 4, h / 4, 3 * w / 4, 3 * h / 4], fill=0)
    else:
        # The apex lies on one side of the box (chosen at random), the base spans the opposite side.
        apex = float(rng.uniform(0.0, 1.0))
        corners = {
            0: [(apex * w, 0), (0, h), (w, h)],
            1: [(apex * w, h), (0, 0), (w, 0)],
            2: [(0, apex * h), (w, 0), (w, h)],
            3: [(w, apex * h), (0, 0), (0, h)],
        }[int(rng.integers(0, 4))]
        draw.polygon(corners, fill=1)
    return np.asarray(canvas, dtype=bool)


def _shape_colour(rng: np.random.Generator, category_id: int) -> np.ndarray:
    hue = float(rng.uniform(*_HUES[category_id])) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, float(rng.uniform(0.65, 1.0)), float(rng.uniform(0.6, 1.0)))
    return np.array([red, green, blue], dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """A desaturated texture `(size, size, 3)` float: smooth noise (kind 0), a gradient (1) or stripes (2)."""
    colour_a, colour_b = _muted_colour(rng), _muted_colour(rng)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.integers(0, 3))
    if kind == 0:
        coarse = rng.random((size // 16 + 1, size // 16 + 1))
        weight = np.kron(coarse, np.ones((16, 16)))[:size, :size]  # blocky noise, smoothed by the fine noise
    elif kind == 1:
        angle = rng.uniform(0.0, 2 * np.pi)
        weight = (np.cos(angle) * xs + np.sin(angle) * ys + 1.5) / 3.0
    else:
        angle, frequency = rng.uniform(0.0, np.pi), rng.uniform(3.0, 10.0)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * xs + np.sin(angle) * ys))
    texture = colour_a + weight[..., None].astype(np.float32) * (colour_b - colour_a)
    return texture + 8.0 * rng.standard_normal((size, size, 1), dtype=np.float32), kind


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(50.0, 210.0)
    return (grey + rng.uniform(-20.0, 20.0, size=3)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m modeling_detr_custom.data.synthetic",
        description="Write the synthetic shapes data set as a COCO-format folder.",
    )
    parser.add_argument("out_dir", type=Path, help="Folder to write (annotations/, train/, val/).")
    defaults = SyntheticSpec()
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="Images in the train split.")
    parser.add_argument("--num-val", type=int, default=defaults.num_val, help="Images in the val split.")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="Square image side in pixels.")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Random seed; same seed, same files.")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, help="Most shapes per image.")
    parser.add_argument("--num-classes", type=int, default=defaults.num_classes, help="3 or 6 shape classes.")
    parser.add_argument(
        "--occlusion", type=int, default=defaults.occlusion, help="0: shapes half visible; 1: a quarter."
    )
    args = parser.parse_args(argv)
    try:
        spec = SyntheticSpec(
            args.num_train, args.num_val, args.image_size, args.seed, args.max_objects, args.num_classes, args.occlusion
        )
    except ValueError as error:
        parser.error(str(error))
    write_synthetic_dataset(args.out_dir, spec)
    print(f"Wrote {spec.num_train} train and {spec.num_val} val images to {args.out_dir}")


if __name__ == "__main__":
    main()
