"""A data set health check before training (behind `scripts/inspect_data.py` and `detr-custom inspect-data`).

For every split: images and boxes per class, images without objects, COCO box sizes, and every invalid image or
annotation with its file and reason (the data is loaded with `on_error="skip"` and every image fully decoded, so
one run lists all of them). Writes `summary.json`, `box_sizes.png` (histograms per split) and
`samples_<split>.png` (ground-truth boxes drawn on sample images) into `--output_dir`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeling_detr_custom.apps.visualize import draw_detections
from modeling_detr_custom.data import CategoryMapping, list_splits, load_detection_split, open_image
from modeling_detr_custom.data.dataset import DetectionSplit
from modeling_detr_custom.data.formats import detect_folder_format
from modeling_detr_custom.data.statistics import COCO_SIZE_LIMITS, box_sizes, split_statistics
from modeling_detr_custom.evaluation.plots import pyplot

__all__ = ["InspectDataArguments", "format_report", "inspect_data"]


@dataclass
class InspectDataArguments:
    """Arguments of `scripts/inspect_data.py`."""

    data: str = field(
        metadata={
            "help": "The data set, as train.py takes it: a COCO, Roboflow COCO, YOLO or Pascal VOC folder, a "
            "`datasets` folder or Hub name, or 'synthetic'."
        }
    )
    splits: str | None = field(
        default=None, metadata={"help": "Comma-separated splits to inspect (default: every split the data set has)."}
    )
    output_dir: str = field(
        default="data_inspection",
        metadata={"help": "Where summary.json, box_sizes.png and samples_<split>.png go (created if needed)."},
    )
    num_samples: int = field(
        default=12, metadata={"help": "Images per split drawn with their ground-truth boxes (0: no sample pictures)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the choice of sample images."})

    def __post_init__(self) -> None:
        if self.num_samples < 0:
            raise ValueError(f"--num_samples must be >= 0, got {self.num_samples}")


def inspect_data(args: InspectDataArguments) -> dict[str, Any]:
    """Loads every split, prints the report, writes the summary and the pictures; returns the summary.

    The first split's classes (`train` when there is one) are used for the others, so an annotation whose class
    only another split knows is listed as a problem, as training would reject it.
    """
    splits = args.splits.split(",") if args.splits else list_splits(args.data)
    if not splits:
        raise ValueError(f"{args.data} has no splits to inspect.")
    splits = sorted(splits, key=lambda name: name != "train")
    loaded: dict[str, DetectionSplit] = {}
    mapping: CategoryMapping | None = None
    with _quiet_skips():
        for name in splits:
            loaded[name] = load_detection_split(args.data, name, mapping=mapping, on_error="skip", verify_images=True)
            mapping = mapping or loaded[name].mapping
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": args.data,
        "layout": _layout(args.data),
        "classes": mapping.names,
        "splits": {name: split_statistics(split) for name, split in loaded.items()},
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    pictures = [plot_box_sizes(loaded, output_dir / "box_sizes.png")]
    if args.num_samples:
        pictures += [plot_samples(split, output_dir / f"samples_{name}.png", args.num_samples, args.seed)
                     for name, split in loaded.items() if len(split.raw)]  # fmt: skip
    print(format_report(summary))
    print(f"\nWrote summary.json and {', '.join(p.name for p in pictures)} to {output_dir}")
    return summary


def format_report(summary: dict[str, Any]) -> str:
    """The printed report: a table per split, boxes per class and split, then every problem."""
    splits = summary["splits"]
    lines = [f"{summary['data']} ({summary['layout']}), {len(summary['classes'])} classes", ""]
    header = ("split", "images", "no objects", "boxes", "crowd", "small", "medium", "large", "problems")
    lines.append("{:<12} {:>7} {:>10} {:>7} {:>6} {:>6} {:>7} {:>6} {:>8}".format(*header))
    for name, stats in splits.items():
        sizes = stats["sizes"]
        lines.append(
            f"{name:<12} {stats['images']:>7} {stats['images_without_objects']:>10} {stats['boxes']:>7} "
            f"{stats['crowd_boxes']:>6} {sizes['small']:>6} {sizes['medium']:>7} {sizes['large']:>6} "
            f"{len(stats['problems']):>8}"
        )
    width = max(12, *(len(name) for name in summary["classes"]))
    lines += ["", "boxes per class (images with the class in parentheses):"]
    lines.append(f"{'class':<{width}} " + " ".join(f"{name:>16}" for name in splits))
    for name in summary["classes"]:
        cells = [f"{s['per_class'][name]['boxes']} ({s['per_class'][name]['images']})" for s in splits.values()]
        empty = [split for split, s in splits.items() if not s["per_class"][name]["boxes"]]
        flag = f"   <- no boxes in {', '.join(empty)}" if empty else ""
        lines.append(f"{name:<{width}} " + " ".join(f"{c:>16}" for c in cells) + flag)
    for name, stats in splits.items():
        if stats["problems"]:
            lines += ["", f"{len(stats['problems'])} problem(s) in {name} (skipped when training with "
                      "--on_bad_data skip, an error otherwise):"]  # fmt: skip
            lines += [f"  - {message}" for message in stats["problems"]]
    if not any(stats["problems"] for stats in splits.values()):
        lines += ["", "No invalid image or annotation found."]
    return "\n".join(lines)


def plot_box_sizes(loaded: dict[str, DetectionSplit], path: Path) -> Path:
    """Histograms of box sizes per split: pixels (COCO's small/medium/large limits marked) and relative."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    sizes = {name: box_sizes(split) for name, split in loaded.items()}
    absolute_all = [v for a, _ in sizes.values() for v in a] or [1.0]
    bins = np.geomspace(max(min(absolute_all), 1.0) * 0.9, max(absolute_all) * 1.1 + 1, 30)
    for name, (absolute, relative) in sizes.items():
        left.hist(absolute, bins=bins, histtype="step", lw=2, label=f"{name} ({len(absolute)} boxes)")
        right.hist(relative, bins=np.linspace(0, 1, 26), histtype="step", lw=2, label=name)
    left.set_xscale("log")
    for limit, text in zip(COCO_SIZE_LIMITS, ("small | medium", "medium | large")):
        left.axvline(math.sqrt(limit), color="gray", ls="--")
        left.text(math.sqrt(limit), 0.97, text, transform=left.get_xaxis_transform(), ha="center", va="top",
                  fontsize=9, color="dimgray", bbox={"facecolor": "white", "edgecolor": "none"})  # fmt: skip
    left.set(
        xlabel="box size sqrt(w x h) in pixels (log scale)", ylabel="boxes", title="Box sizes (COCO limits dashed)"
    )
    right.set(xlabel="sqrt(box area / image area)", ylabel="boxes", title="Box sizes relative to their image")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    left.legend(fontsize=9, loc="upper left", bbox_to_anchor=(0.0, 0.9))  # below the size limits' labels
    right.legend(fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_samples(split: DetectionSplit, path: Path, num_samples: int, seed: int) -> Path:
    """A grid of sample images with their ground-truth boxes and class names (crowd boxes tagged as such)."""
    plt = pyplot()
    rows = split.raw.to_list()
    chosen = sorted(np.random.default_rng(seed).choice(len(rows), min(num_samples, len(rows)), replace=False))
    columns = min(4, len(chosen))
    figure, axes = plt.subplots(math.ceil(len(chosen) / columns), columns, figsize=(4 * columns, 4.2 * math.ceil(
        len(chosen) / columns)), dpi=100, squeeze=False)  # fmt: skip
    names = dict(zip(split.mapping.category_ids, split.mapping.names))
    labels = {category_id: label for label, category_id in enumerate(split.mapping.category_ids)}
    for ax, index in zip(axes.flat, chosen):
        row = rows[index]
        image = open_image(row["image"], row["file_name"])
        boxes = [
            {"box": [x, y, x + w, y + h], "score": None, "label_id": labels[a["category_id"]],
             "label": names[a["category_id"]] + (" (crowd)" if a["iscrowd"] else "")}
            for a in row["annotations"] for x, y, w, h in [a["bbox"]]
        ]  # fmt: skip
        scale = min(320 / min(image.size), 640 / max(image.size))  # about 320 px, readable tags
        ax.imshow(draw_detections(image, boxes, scale=scale, empty_note="no objects"))
        ax.set_title(f"{Path(row['file_name']).name[:32]}\n{len(boxes)} object(s), {image.width}x{image.height}",
                     fontsize=9)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    figure.suptitle(f"{split.source} [{split.split}]: ground truth on {len(chosen)} of {len(rows)} images")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path)
    plt.close(figure)
    return path


def _layout(data: str) -> str:
    if data == "synthetic" or data.startswith("synthetic:"):
        return "synthetic"
    if Path(data).is_dir():
        folder_format = detect_folder_format(data)
        return f"{folder_format.name} layout" if folder_format else "datasets folder"
    return "datasets Hub name"


@contextlib.contextmanager
def _quiet_skips() -> Iterator[None]:
    """The report lists every problem once; the loaders' per-problem warnings would repeat the first 20."""
    logger = logging.getLogger("modeling_detr_custom.data.records")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
