"""Image processor speed: DetrCustomImageProcessor against transformers' DETR processors, in one run.

The same 16 PIL images of mixed sizes (COCO-like, portrait and landscape, one very wide and one very tall) go
through each processor with default settings (shortest edge 800, longest 1333, pad to the batch), without and with
COCO annotations. Calls are interleaved (ours, torchvision backend, PIL backend, repeat) so that load on a shared
machine affects all three alike; the median time per batch gives images/second, and ratios are against the
references measured in the same run. The maximum absolute pixel difference to each reference is printed too.

    python benchmarks/bench_image_processor.py --repeats 5
"""

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import DetrImageProcessor
from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

from modeling_detr_custom import DetrCustomImageProcessor

__all__ = ["IMAGE_SIZES", "make_inputs", "run"]

# (width, height) of the 16 images
IMAGE_SIZES = [
    (640, 480), (480, 640), (1024, 768), (768, 1024), (300, 1000), (1000, 300), (800, 600), (1280, 720),
    (720, 1280), (500, 375), (375, 500), (333, 500), (1920, 1080), (427, 640), (612, 612), (256, 256),
]  # fmt: skip


def make_inputs(seed: int = 0) -> tuple[list[PIL.Image.Image], list[dict[str, Any]]]:
    """The 16 random RGB images and 3 to 10 COCO boxes per image (one in five a crowd annotation)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id, (width, height) in enumerate(IMAGE_SIZES):
        images.append(PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
        objects = []
        for j in range(int(rng.integers(3, 11))):
            x, y = rng.uniform(0, 0.7 * width), rng.uniform(0, 0.7 * height)
            w, h = rng.uniform(4, width - x), rng.uniform(4, height - y)
            objects.append({"bbox": [x, y, w, h], "category_id": j % 5, "area": w * h, "iscrowd": int(j % 5 == 4)})
        annotations.append({"image_id": image_id, "annotations": objects})
    return images, annotations


def _median_seconds(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each call, interleaving the calls in every repeat (after one warm-up round)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(repeats: int = 5) -> list[dict[str, Any]]:
    """One row per case ("no annotations", "with annotations"): images/second of each processor and ratios."""
    images, annotations = make_inputs()
    processors = {
        "ours": DetrCustomImageProcessor(),
        "torchvision": DetrImageProcessor(),
        "pil": DetrImageProcessorPil(),
    }
    reference = processors["ours"](images)["pixel_values"]
    max_abs_diff = {
        name: float((processors[name](images, return_tensors="pt")["pixel_values"] - reference).abs().max())
        for name in ("torchvision", "pil")
    }
    rows = []
    for case, batch_annotations in (("no annotations", None), ("with annotations", annotations)):
        calls = {
            name: functools.partial(processor, images, annotations=batch_annotations, return_tensors="pt")
            for name, processor in processors.items()
        }
        seconds = _median_seconds(calls, repeats)
        rate = {name: len(images) / value for name, value in seconds.items()}
        rows.append(
            {
                "benchmark": "image_processor",
                "case": case,
                "images": len(images),
                "ours_images_per_s": rate["ours"],
                "torchvision_images_per_s": rate["torchvision"],
                "pil_images_per_s": rate["pil"],
                "ratio_vs_torchvision": rate["ours"] / rate["torchvision"],
                "ratio_vs_pil": rate["ours"] / rate["pil"],
                "max_abs_diff_vs_torchvision": max_abs_diff["torchvision"],
                "max_abs_diff_vs_pil": max_abs_diff["pil"],
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"16 images {', '.join(f'{w}x{h}' for w, h in IMAGE_SIZES)}; torch threads: {torch.get_num_threads()}")
    header = ["case", "ours img/s", "torchvision img/s", "PIL img/s", "x torchvision", "x PIL"]
    print(" | ".join(f"{column:>17}" for column in header))
    for row in rows:
        values = [
            row["case"],
            f"{row['ours_images_per_s']:.1f}",
            f"{row['torchvision_images_per_s']:.1f}",
            f"{row['pil_images_per_s']:.1f}",
            f"{row['ratio_vs_torchvision']:.2f}x",
            f"{row['ratio_vs_pil']:.2f}x",
        ]
        print(" | ".join(f"{value:>17}" for value in values))
    row = rows[0]
    print(
        f"max |pixel_values - reference|: torchvision backend {row['max_abs_diff_vs_torchvision']:.2e}, "
        f"PIL backend {row['max_abs_diff_vs_pil']:.2e}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per processor and case (median)")
    _print_table(run(parser.parse_args().repeats))
