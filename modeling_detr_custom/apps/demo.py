"""`make demo`: train the small default DETR from scratch on the synthetic shapes, on the CPU, in minutes.

Four steps, each printed with the command or call it runs and its wall time:

1. generate the synthetic data set (COCO folder under `<output_dir>/data/`);
2. train the `detr-tiny-demo` preset with `accelerate launch -m modeling_detr_custom.apps.cli.train ...`
   (the Hub-style checkpoint lands in `<output_dir>/demo/last/`);
3. evaluate that checkpoint on the validation split with pycocotools and print the metrics table;
4. run `transformers.pipeline("object-detection")` on held-out validation images and draw the detections into
   `<output_dir>/demo.png`.

The training settings are the ones measured to learn fastest on two CPU cores (see `docs/demo_measurements.md`).

`--task panoptic` trains `DetrCustomForSegmentation` end to end from scratch on the synthetic COCO panoptic data
(the detector on the things and the stuff, with the mask head), prints the panoptic quality of the training run's
final evaluation (PQ, SQ, RQ for all, things, stuff and per class, plus bbox AP), and draws
`pipeline("image-segmentation")` segments into `<output_dir>/demo_panoptic.png`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["DemoArguments", "DemoResult", "run_demo", "train_command"]

_TILE_SCALE = 2  # the synthetic images are small: drawn at twice their size so labels stay readable
# Default optimizer steps per task: measured to fit the 15-minute budget on two CPU cores (docs/demo_measurements.md).
DEFAULT_MAX_STEPS = {"detection": 4500, "panoptic": 2000}
# Default preset per task: the panoptic demo was measured with detr-tiny-refine, before detr-tiny-demo existed.
DEFAULT_MODEL = {"detection": "detr-tiny-demo", "panoptic": "detr-tiny-refine"}


@dataclass
class DemoArguments:
    """Settings of `make demo` (`detr-custom demo --help`). The defaults are the measured demo."""

    task: str = field(
        default="detection",
        metadata={
            "help": "'detection' (DETR boxes; outputs/demo.png) or 'panoptic' (DetrCustomForSegmentation trained "
            "end to end on the synthetic things and stuff; prints PQ/SQ/RQ; outputs/demo_panoptic.png)."
        },
    )
    output_dir: str = field(default="outputs", metadata={"help": "Where data, checkpoint and demo.png go."})
    num_train: int = field(default=4000, metadata={"help": "Synthetic training images."})
    num_val: int = field(default=200, metadata={"help": "Synthetic validation images (held out)."})
    image_size: int = field(default=128, metadata={"help": "Side of the square synthetic images in pixels."})
    max_objects: int = field(default=4, metadata={"help": "Most shapes per synthetic image."})
    num_classes: int = field(default=3, metadata={"help": "Shape classes: 3, or 6 (the harder setting)."})
    occlusion: int = field(default=0, metadata={"help": "0: shapes half visible; 1: up to 3/4 hidden (harder)."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the synthetic data set."})
    model: str | None = field(
        default=None,
        metadata={"help": f"Preset (or config file) to train from scratch (default: {DEFAULT_MODEL} by --task)."},
    )
    max_steps: int | None = field(
        default=None, metadata={"help": f"Optimizer steps (default: {DEFAULT_MAX_STEPS} by --task)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per step (split over the processes)."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate of the transformer."})
    lr_backbone: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the backbone."})
    lr_drop_fraction: float = field(
        default=0.8333, metadata={"help": "Fraction of --max_steps after which the learning rates drop x0.1."}
    )
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping max norm."})
    augment: bool = field(default=False, metadata={"help": "Use DETR's flip/resize/crop training augmentation."})
    num_processes: int = field(default=2, metadata={"help": "Training processes (`accelerate launch`)."})
    threads_per_process: int = field(default=1, metadata={"help": "CPU threads per training process."})
    num_images: int = field(default=8, metadata={"help": "Validation images drawn into demo.png."})
    threshold: float = field(default=0.5, metadata={"help": "Score threshold of the drawn detections."})
    seed: int = field(default=42, metadata={"help": "Training seed."})

    def __post_init__(self) -> None:
        if self.task not in DEFAULT_MAX_STEPS:
            raise ValueError(f"--task must be one of {', '.join(DEFAULT_MAX_STEPS)}, got {self.task!r}.")
        if self.max_steps is None:
            self.max_steps = DEFAULT_MAX_STEPS[self.task]
        if self.model is None:
            self.model = DEFAULT_MODEL[self.task]
        for name in ("num_train", "num_val", "max_steps", "num_processes", "threads_per_process", "num_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"--batch_size {self.batch_size} must be a multiple of --num_processes {self.num_processes}."
            )
        if not 0.0 < self.lr_drop_fraction <= 1.0:
            raise ValueError(f"--lr_drop_fraction must be in (0, 1], got {self.lr_drop_fraction}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must be in [0, 1], got {self.threshold}.")

    @property
    def data_source(self) -> str:
        """The `synthetic:` source string naming the data set these arguments describe."""
        return (
            f"synthetic:num_train={self.num_train},num_val={self.num_val},image_size={self.image_size},"
            f"seed={self.data_seed},max_objects={self.max_objects}"
            + (f",num_classes={self.num_classes}" if self.num_classes != 3 else "")
            + (f",occlusion={self.occlusion}" if self.occlusion else "")
        )


@dataclass
class DemoResult:
    """What a demo run produced."""

    data_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, float]
    picture: Path
    detections: list[list[dict[str, Any]]]
    seconds: dict[str, float]


def run_demo(args: DemoArguments, log: Callable[[str], None] = print) -> DemoResult:
    """Generates the data, trains, evaluates and draws; see the module docstring.

    Raises:
        RuntimeError: The training command failed (its output has been printed above).
    """
    output_dir = Path(args.output_dir)
    seconds: dict[str, float] = {}
    with _timed("data", seconds, log):
        data_dir = _generate_data(args, output_dir / "data", log)
    train_dir = output_dir / ("demo" if args.task == "detection" else f"demo_{args.task}")
    with _timed("training", seconds, log):
        _train(args, data_dir, train_dir, log)
    checkpoint_dir = train_dir / "last"
    if args.task == "panoptic":
        return _finish_panoptic(args, data_dir, checkpoint_dir, output_dir, seconds, log)
    with _timed("evaluation", seconds, log):
        metrics = _evaluate(checkpoint_dir, data_dir, train_dir / "metrics.json")
    with _timed("pipeline", seconds, log):
        picture = output_dir / "demo.png"
        detections = _draw_pipeline_detections(checkpoint_dir, data_dir, args, picture)
    log(_summary(metrics, checkpoint_dir, picture, detections, seconds))
    return DemoResult(data_dir, checkpoint_dir, metrics, picture, detections, seconds)


def train_command(args: DemoArguments, data_dir: Path, train_dir: Path) -> list[str]:
    """The `accelerate launch` command line of the demo's training run."""
    launcher = Path(sys.executable).with_name("accelerate")
    launch = [str(launcher), "launch"] if launcher.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    per_device_batch = args.batch_size // args.num_processes
    # `--cpu` starts one process only; several processes form a gloo group on the CPU when no GPU is visible
    # (the demo hides GPUs, see `_train`).
    return [
        *launch,
        "--cpu" if args.num_processes == 1 else "--multi_gpu",
        f"--num_processes={args.num_processes}",
        f"--num_cpu_threads_per_process={args.threads_per_process}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_port=0",  # a free port: two demos (or tests) on one machine must not collide on 29500
        "--module",
        "modeling_detr_custom.apps.cli.train",
        f"--data={data_dir}",
        f"--model={args.model}",
        f"--output_dir={train_dir}",
        f"--max_steps={args.max_steps}",
        f"--per_device_train_batch_size={per_device_batch}",
        "--per_device_eval_batch_size=25",
        f"--learning_rate={args.learning_rate}",
        f"--lr_backbone={args.lr_backbone}",
        f"--lr_drop_steps={max(round(args.lr_drop_fraction * args.max_steps), 1)}",
        f"--max_grad_norm={args.max_grad_norm}",
        f"--seed={args.seed}",
        # Evaluate and save once, at the end: a per-epoch evaluation would cost minutes of the demo.
        f"--eval_steps={args.max_steps}",
        f"--save_steps={args.max_steps}",
        "--save_total_limit=1",
        "--logging_steps=50",
        *([] if args.augment else ["--no_augment"]),
        *([] if args.task == "detection" else [f"--task={args.task}"]),
    ]


@contextmanager
def _timed(step: str, seconds: dict[str, float], log: Callable[[str], None]) -> Iterator[None]:
    log(f"\n=== {step} ===")
    start = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - start
    log(f"--- {step}: {seconds[step]:.0f} s")


def _generate_data(args: DemoArguments, data_root: Path, log: Callable[[str], None]) -> Path:
    from modeling_detr_custom.data.synthetic import SyntheticSpec, ensure_synthetic_dataset

    spec = SyntheticSpec.from_source(args.data_source)
    folder = data_root / spec.folder_name()
    existed = (folder / "annotations" / "instances_val.json").is_file()
    ensure_synthetic_dataset(spec, folder)
    log(f"{'Reusing' if existed else 'Generated'} {args.data_source} in {folder}")
    return folder


def _train(args: DemoArguments, data_dir: Path, train_dir: Path, log: Callable[[str], None]) -> None:
    if train_dir.exists():  # the demo's own folder: a fresh run, not a resume of an older demo
        shutil.rmtree(train_dir)
    command = train_command(args, data_dir, train_dir)
    log(" ".join(command))
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the demo measures CPU training
    completed = subprocess.run(command, check=False, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"Training failed with exit code {completed.returncode}: {' '.join(command)}")


def _evaluate(checkpoint_dir: Path, data_dir: Path, metrics_file: Path) -> dict[str, float]:
    from modeling_detr_custom.apps.evaluate import EvaluateArguments, evaluate_checkpoint

    arguments = EvaluateArguments(
        model=str(checkpoint_dir), data=str(data_dir), split="val", output=str(metrics_file),
        per_device_eval_batch_size=25,
    )  # fmt: skip
    metrics = evaluate_checkpoint(arguments)
    if metrics is None:
        raise RuntimeError("Evaluation returned no metrics.")
    return metrics


def _draw_pipeline_detections(
    checkpoint_dir: Path, data_dir: Path, args: DemoArguments, picture: Path
) -> list[list[dict[str, Any]]]:
    """Runs `pipeline("object-detection")` on the first validation images and tiles the drawn results."""
    from transformers import pipeline

    from modeling_detr_custom.apps.visualize import draw_detections
    from modeling_detr_custom.data.images import open_image

    paths = sorted((data_dir / "val").glob("*.png"))[: args.num_images]
    detector = pipeline("object-detection", model=str(checkpoint_dir), device="cpu")
    images = [open_image(path) for path in paths]
    detections = detector(images, threshold=args.threshold, batch_size=len(images))
    _tile([draw_detections(image, found, scale=_TILE_SCALE) for image, found in zip(images, detections)]).save(picture)
    return detections


def _tile(images: list[Image.Image], columns: int = 4, gap: int = 4) -> Image.Image:
    """Images of equal size in a grid, `columns` per row, separated by white gaps."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    columns = min(columns, len(images))
    canvas = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white")
    for index, image in enumerate(images):
        canvas.paste(image, ((index % columns) * (width + gap), (index // columns) * (height + gap)))
    return canvas


def _summary(
    metrics: dict[str, float],
    checkpoint_dir: Path,
    picture: Path,
    detections: list[list[dict[str, Any]]],
    seconds: dict[str, float],
) -> str:
    timing = ", ".join(f"{step} {value:.0f} s" for step, value in seconds.items())
    drawn = sum(len(image) for image in detections)
    return "\n".join(
        [
            "\n=== demo done ===",
            f"COCO AP@[.5:.95] {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, AP75 {metrics['AP75']:.3f} "
            "on the synthetic validation split",
            f"duplicates: {metrics['duplicate_rate']:.1%} of the detections above 0.5 overlap another of their "
            "class (IoU > 0.7)",
            f"checkpoint: {checkpoint_dir} (loads with AutoModelForObjectDetection / pipeline)",
            f"picture:    {picture} ({drawn} detections on {len(detections)} held-out images)",
            f"time:       {timing}; total {sum(seconds.values()):.0f} s",
        ]
    )


def _finish_panoptic(
    args: DemoArguments,
    data_dir: Path,
    checkpoint_dir: Path,
    output_dir: Path,
    seconds: dict[str, float],
    log: Callable[[str], None],
) -> DemoResult:
    """The panoptic demo's evaluation (the training run's final one, on the validation split) and picture."""
    from modeling_detr_custom.evaluation.panoptic_quality import format_panoptic_table

    metrics = json.loads((checkpoint_dir / "eval_results.json").read_text())
    with _timed("pipeline", seconds, log):
        picture = output_dir / "demo_panoptic.png"
        segments = _draw_pipeline_segments(checkpoint_dir, data_dir, args, picture)
    timing = ", ".join(f"{step} {value:.0f} s" for step, value in seconds.items())
    drawn = sum(len(image) for image in segments)
    log(
        "\n".join(
            [
                "\n=== demo done ===",
                "Panoptic quality on the synthetic validation split (%):",
                format_panoptic_table(metrics, "panoptic_per_class"),
                f"COCO bbox AP@[.5:.95] {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f} (things and stuff)",
                f"checkpoint: {checkpoint_dir} (loads with AutoModelForImageSegmentation / pipeline)",
                f"picture:    {picture} ({drawn} segments on {len(segments)} held-out images)",
                f"time:       {timing}; total {sum(seconds.values()):.0f} s",
            ]
        )
    )
    return DemoResult(data_dir, checkpoint_dir, metrics, picture, segments, seconds)


def _draw_pipeline_segments(
    checkpoint_dir: Path, data_dir: Path, args: DemoArguments, picture: Path
) -> list[list[dict[str, Any]]]:
    """Runs `pipeline("image-segmentation")` (panoptic) on the first validation images and tiles the drawings."""
    from transformers import pipeline

    from modeling_detr_custom.apps.visualize import draw_segments
    from modeling_detr_custom.data.images import open_image

    paths = sorted((data_dir / "val").glob("*.png"))[: args.num_images]
    segmenter = pipeline("image-segmentation", model=str(checkpoint_dir), device="cpu")
    images = [open_image(path) for path in paths]
    segments = segmenter(images, subtask="panoptic", threshold=args.threshold, batch_size=len(images))
    _tile([draw_segments(image, found, scale=_TILE_SCALE) for image, found in zip(images, segments)]).save(picture)
    return segments
