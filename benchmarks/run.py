"""Side-by-side speed of detr-custom against transformers' DETR, in one run (`make bench`).

    python benchmarks/run.py [--quick] [--repeats N] [--output results.json] [--markdown table.md] [--items 1,2,...]

The same random weights go into transformers' `DetrForObjectDetection` (default SDPA attention) and into ours;
outputs are checked to agree within 1e-4 in fp32 before anything is timed (the run aborts otherwise), and calls to
the two alternate within every repeat. Items (issue 6):
  1. inference fp32, DETR-R50, batch 1, one 800x1066 image with its pixel mask
  2. the same at batch 4 with mixed sizes (padding)
  3. inference under bf16 autocast on CPU (and fp32, fp16 and bf16 autocast on CUDA when a GPU is present)
  4. one training step (forward, loss with matching, backward, AdamW step): DETR-R50 at batch 2, 800 px, and the
     small default configuration
  5. the image processor on 16 mixed-size images, against transformers' torchvision and PIL processors
  6. the matcher + loss alone, 8 images with 0-50 boxes, 6 decoder layers
  7. peak memory of items 1 and 4 (RSS, each model in its own process)
  8. torch.compile of our model: inference and a training step, gain over eager
Items 1-4 and 8 use 2 threads. `--quick` shrinks images to 40% and repeats to 2 for development runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing is downloaded

import torch  # noqa: E402
import transformers  # noqa: E402
from bench_common import (  # noqa: E402
    Row,
    interleaved_seconds,
    machine_description,
    markdown_table,
    print_table,
    row_from_seconds,
)
from bench_image_processor import make_inputs  # noqa: E402
from bench_loss import loss_rows  # noqa: E402
from bench_memory import memory_rows  # noqa: E402
from bench_models import (  # noqa: E402
    MODEL_SPECS,
    ParityError,
    autocast_inference_row,
    build_checkpoint,
    compile_rows,
    cuda_inference_rows,
    fp32_inference_rows,
    load_pair,
    make_batch,
    training_labels,
    training_rows,
)
from torch import nn  # noqa: E402
from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil  # noqa: E402

from modeling_detr_custom import DetrCustomImageProcessor  # noqa: E402

THREADS = 2
SINGLE_SIZE = [(800, 1066)]
MIXED_SIZES = [(800, 1066), (1066, 800), (800, 1199), (800, 800)]
TRAINING_SIZES = [(800, 1066), (800, 1000)]
SMALL_TRAINING_SIZES = [(128, 128), (128, 128)]  # the demo's synthetic images
QUICK_SCALE = 0.4
ALL_ITEMS = ("1", "2", "3", "4", "5", "6", "7", "8")


@dataclass
class Settings:
    """Parsed command line."""

    quick: bool
    repeats: int
    output: Path
    items: tuple[str, ...]
    compile: bool
    markdown: Path | None = None

    def sizes(self, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Image sizes of a full run, shrunk in quick mode."""
        if not self.quick:
            return sizes
        return [(round(height * QUICK_SCALE), round(width * QUICK_SCALE)) for height, width in sizes]


def _size_text(sizes: list[tuple[int, int]]) -> str:
    return ", ".join(f"{height}x{width}" for height, width in sizes)


def _inference_rows(settings: Settings, ours: nn.Module, theirs: nn.Module) -> list[Row]:
    """Items 1-3 and the compiled DETR-R50 inference of item 8."""
    name = MODEL_SPECS["r50"].name
    single, mixed = make_batch(settings.sizes(SINGLE_SIZE)), make_batch(settings.sizes(MIXED_SIZES), seed=1)
    single_case = f"{name} inference fp32, batch 1, {_size_text(settings.sizes(SINGLE_SIZE))}"
    cases = [("1", single_case, single)] if "1" in settings.items else []
    if "2" in settings.items:
        padded = "x".join(str(size) for size in mixed["pixel_mask"].shape[1:])
        cases.append(("2", f"{name} inference fp32, batch 4 mixed, padded {padded}", mixed))
    rows = fp32_inference_rows(ours, theirs, cases, settings.repeats)
    if "3" in settings.items:
        bf16_case = single_case.replace("fp32", "CPU bf16 autocast")
        rows.append(autocast_inference_row(ours, theirs, single, bf16_case, settings.repeats))
        if torch.cuda.is_available():
            rows += cuda_inference_rows(ours, theirs, single, single_case.replace(" fp32", ""), settings.repeats)
    if "8" in settings.items and settings.compile:
        rows += compile_rows(ours, theirs, single, single_case.replace(" inference fp32", ""), settings.repeats, None)
    return rows


def _training_rows(settings: Settings, r50_pair: tuple, checkpoints: dict[str, Path]) -> list[Row]:
    """Item 4: DETR-R50 at 800 px, the small configuration at the demo's size and at 800 px."""
    r50, small = MODEL_SPECS["r50"], MODEL_SPECS["small"]
    sizes = settings.sizes(TRAINING_SIZES)
    cases = {
        f"{r50.name} training step, batch 2, {_size_text(sizes)}": (
            *r50_pair, make_batch(sizes, seed=2), training_labels(2, r50.num_labels)
        ),
        f"{small.name} training step, batch 2, {_size_text(SMALL_TRAINING_SIZES)}": (
            *load_pair(small, checkpoints["small"]), make_batch(SMALL_TRAINING_SIZES, seed=3),
            training_labels(2, small.num_labels),
        ),
        # A fresh pair for each case: training moves the two models' weights apart by rounding.
        f"{small.name} training step, batch 2, {_size_text(sizes)}": (
            *load_pair(small, checkpoints["small"]), make_batch(sizes, seed=2), training_labels(2, small.num_labels)
        ),
    }  # fmt: skip
    return training_rows(cases, settings.repeats)


def _small_inference_rows(settings: Settings, checkpoints: dict[str, Path]) -> list[Row]:
    """Item 1 for the small configuration at the demo's image size (no target: reported for its users)."""
    small = MODEL_SPECS["small"]
    ours, theirs = load_pair(small, checkpoints["small"])
    case = f"{small.name} inference fp32, batch 2, {_size_text(SMALL_TRAINING_SIZES)}"
    inputs = make_batch(SMALL_TRAINING_SIZES, seed=3)
    return fp32_inference_rows(ours, theirs, [("1", case, inputs)], max(settings.repeats, 15), target=None)


def _small_compile_rows(settings: Settings, checkpoints: dict[str, Path]) -> list[Row]:
    """Item 8 for the small configuration: compiled inference and a compiled training step."""
    small = MODEL_SPECS["small"]
    ours, theirs = load_pair(small, checkpoints["small"])
    inputs, labels = make_batch(SMALL_TRAINING_SIZES, seed=3), training_labels(2, small.num_labels)
    case = f"{small.name}, batch 2, {_size_text(SMALL_TRAINING_SIZES)}"
    return compile_rows(ours, theirs, inputs, case, settings.repeats, (ours, inputs, labels, small.name))


def _model_rows(settings: Settings, checkpoints: dict[str, Path]) -> list[Row]:
    """Items 1-4 and 8 (the models), with 2 threads."""
    ours, theirs = load_pair(MODEL_SPECS["r50"], checkpoints["r50"])
    rows = _inference_rows(settings, ours, theirs)
    if "1" in settings.items:
        rows += _small_inference_rows(settings, checkpoints)
    if "4" in settings.items:
        rows += _training_rows(settings, (ours, theirs), checkpoints)
    if "8" in settings.items and settings.compile:
        rows += _small_compile_rows(settings, checkpoints)
    return rows


def _image_processor_rows(repeats: int) -> list[Row]:
    """Item 5: seconds per image of our processor against transformers' torchvision and PIL backends."""
    images, annotations = make_inputs()
    processors = {
        "ours": DetrCustomImageProcessor(),
        "torchvision": transformers.DetrImageProcessor(),
        "PIL": DetrImageProcessorPil(),
    }
    rows = []
    for case, batch_annotations in (("no annotations", None), ("with COCO annotations", annotations)):
        calls = {
            name: partial(processor, images, annotations=batch_annotations, return_tensors="pt")
            for name, processor in processors.items()
        }
        times = interleaved_seconds(calls, repeats)
        for reference, target in (("torchvision", 1.0), ("PIL", 3.0)):
            rows.append(
                row_from_seconds(
                    "5", f"image processor, 16 mixed-size images, {case}", times["ours"], times[reference],
                    "s/image", len(images), target, reference=f"transformers {reference} backend",
                )
            )  # fmt: skip
    return rows


def run(settings: Settings) -> list[Row]:
    """All requested items; raises `ParityError` if a model comparison fails its parity check."""
    torch.set_num_threads(THREADS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="detr_bench_") as folder:
        checkpoints = {name: build_checkpoint(spec, Path(folder) / name) for name, spec in MODEL_SPECS.items()}
        if set(settings.items) & {"1", "2", "3", "4", "8"}:
            rows += _model_rows(settings, checkpoints)
        if "5" in settings.items:
            rows += _image_processor_rows(max(settings.repeats, 15))  # cheap; 5 repeats of ms calls are noisy
        if "6" in settings.items:
            rows += loss_rows(max(settings.repeats, 5))
        if "7" in settings.items:
            work = {"inference": settings.sizes(SINGLE_SIZE), "training": settings.sizes(TRAINING_SIZES)}
            rows += memory_rows(checkpoints["r50"], "r50", work)
    return rows


def _parse_arguments() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"images at {QUICK_SCALE:.0%} size, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 5, quick 2)")
    parser.add_argument("--output", type=Path, default=None, help="write the rows and the machine as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown to this file")
    parser.add_argument("--items", default=",".join(ALL_ITEMS), help="comma-separated items to run (default all)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="item 8 (default: on unless --quick)"
    )
    arguments = parser.parse_args()
    items = tuple(item.strip() for item in arguments.items.split(",") if item.strip())
    unknown = sorted(set(items) - set(ALL_ITEMS))
    if unknown:
        parser.error(f"unknown items {unknown}; choose from {', '.join(ALL_ITEMS)}.")
    repeats = arguments.repeats or (2 if arguments.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}.")
    compile_models = not arguments.quick if arguments.compile is None else arguments.compile
    return Settings(arguments.quick, repeats, arguments.output, items, compile_models, arguments.markdown)


def main() -> int:
    settings = _parse_arguments()
    torch.set_num_threads(THREADS)
    machine = machine_description()
    print(f"machine: {json.dumps(machine)}")
    print(f"settings: quick={settings.quick}, repeats={settings.repeats}, items={','.join(settings.items)}\n")
    try:
        rows = run(settings)
    except ParityError as error:
        print(f"ABORTED: parity check failed, nothing is timed against different outputs.\n{error}", file=sys.stderr)
        return 1
    print_table(rows)
    if settings.markdown is not None:
        settings.markdown.write_text(markdown_table(rows))
        print(f"\nMarkdown table written to {settings.markdown}")
    if settings.output is not None:
        machine["load_average_after"] = os.getloadavg()
        results = {"machine": machine, "quick": settings.quick, "repeats": settings.repeats}
        results["rows"] = [row.as_dict() for row in rows]
        settings.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {settings.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
