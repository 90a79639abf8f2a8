"""Batched inference over image files, folders and globs (behind `scripts/predict.py`).

    detector = ObjectDetector.from_pretrained("outputs/detr-custom/last")
    records = predict_files(detector, find_images(["photos/"]).paths, threshold=0.5)

A record per image: `{"file", "width", "height", "detections": [{"score", "label", "label_id", "box"}]}`, boxes as
`[x0, y0, x1, y1]` pixels of the image as opened (EXIF orientation applied), detections best first. Consecutive
images of the same size are batched together, so the batch size does not change the detections.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from modeling_detr_custom.apps.loading import load_detector
from modeling_detr_custom.apps.visualize import draw_detections
from modeling_detr_custom.data.images import open_image
from modeling_detr_custom.evaluation.loop import forward_by_image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "FoundImages",
    "ObjectDetector",
    "PredictArguments",
    "find_images",
    "predict_files",
    "run_predict",
]

IMAGE_EXTENSIONS = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_GLOB_CHARACTERS = frozenset("*?[")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")

Reporter = Callable[[str], None]


@dataclass
class FoundImages:
    """The image files the inputs name, in order, and the inputs that named none."""

    paths: list[Path]
    problems: list[str]


def find_images(inputs: Sequence[str]) -> FoundImages:
    """Expands files, folders (their image files, sorted; not recursive) and globs (`**` recurses).

    A file named explicitly is always taken (an unreadable one is reported when it is read); folders and globs
    contribute files with an image extension (`IMAGE_EXTENSIONS`, any case) only. Duplicates are dropped.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif _GLOB_CHARACTERS & set(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            found = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            problems.append(f"{item}: no such file or folder")
            continue
        if not found:
            problems.append(f"{item}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths.extend(found)
    return FoundImages(list(dict.fromkeys(paths)), problems)


class ObjectDetector:
    """A model and its image processor on a device: images in, detections out.

    Args:
        model: A DETR detection model (`logits`, `pred_boxes` outputs).
        processor: Its image processor (`DetrCustomImageProcessor`).
        device: Where to run the model.
    """

    def __init__(self, model: torch.nn.Module, processor: Any, device: str | torch.device = "cpu") -> None:
        self.device = _check_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: str | torch.device = "cpu") -> ObjectDetector:
        """Loads a checkpoint folder or Hub id (ours, or transformers' DETR format).

        Raises:
            ValueError: For an unusable device, or a path that is neither a folder nor an `owner/name` Hub id.
        """
        device = _check_device(device)
        if not Path(checkpoint).is_dir() and not _HUB_ID.fullmatch(checkpoint):
            raise ValueError(f"--model {checkpoint}: no such checkpoint folder, and not a Hub id (owner/name).")
        model, processor = load_detector(checkpoint)
        return cls(model, processor, device)

    @torch.inference_mode()
    def detect(
        self, images: Sequence[Image.Image], threshold: float = 0.5, top_k: int | None = None
    ) -> list[list[dict[str, Any]]]:
        """Detections per image, best first.

        Args:
            images: RGB images (any sizes; images of equal processed size share a forward pass).
            threshold: Keep detections scoring above this.
            top_k: Keep at most this many per image.

        Returns:
            Per image a list of `{"score": float, "label": str, "label_id": int, "box": [x0, y0, x1, y1]}` in
            pixels of that image.
        """
        if not images:
            return []
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values, pixel_mask = inputs["pixel_values"].to(self.device), inputs["pixel_mask"].to(self.device)
        records: list[list[dict[str, Any]]] = [[] for _ in images]
        # Each image at its own size, as evaluation does: padding would make detections depend on the batch.
        for indices, outputs in forward_by_image_size(self.model, pixel_values, pixel_mask):
            target_sizes = [(images[i].height, images[i].width) for i in indices]
            results = self.processor.post_process_object_detection(
                outputs, threshold=threshold, target_sizes=target_sizes, top_k=top_k
            )
            for i, result in zip(indices, results):
                records[i] = self._as_records(result)
        return records

    def _as_records(self, result: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        order = result["scores"].argsort(descending=True)
        records = []
        for score, label_id, box in zip(
            result["scores"][order].tolist(), result["labels"][order].tolist(), result["boxes"][order].tolist()
        ):
            label = self.id2label.get(label_id, str(label_id))
            records.append(
                {"score": round(score, 5), "label": label, "label_id": label_id, "box": [round(v, 2) for v in box]}
            )
        return records


def predict_files(
    detector: ObjectDetector,
    paths: Sequence[Path],
    threshold: float = 0.5,
    top_k: int | None = None,
    batch_size: int = 8,
    draw_dir: Path | None = None,
    report: Reporter | None = None,
) -> list[dict[str, Any]]:
    """Runs `detector` over image files in batches; unreadable files are reported and skipped.

    Args:
        detector: The model to run.
        paths: Image files.
        threshold: Keep detections scoring above this.
        top_k: Keep at most this many detections per image.
        batch_size: Most images per forward pass (consecutive images of one size are batched).
        draw_dir: If given, write `<name>.png` per image with the detections drawn.
        report: Called with a one-line message for each skipped file (default: print to stderr).

    Returns:
        One record per readable image, in input order: `{"file", "width", "height", "detections"}`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    report = report or _print_warning
    names = _drawing_names(paths) if draw_dir is not None else {}
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with tqdm(total=len(paths), unit="image", desc="predict", disable=None) as bar:
        for batch in _readable_batches(paths, batch_size, report, bar):
            detections = detector.detect([image for _, image in batch], threshold, top_k)
            for (path, image), image_detections in zip(batch, detections):
                records.append(
                    {"file": str(path), "width": image.width, "height": image.height, "detections": image_detections}
                )
                if draw_dir is not None:
                    draw_detections(image, image_detections).save(draw_dir / names[path])
            bar.update(len(batch))
    return records


def _readable_batches(
    paths: Sequence[Path], batch_size: int, report: Reporter, bar: tqdm
) -> Iterator[list[tuple[Path, Image.Image]]]:
    """Batches of consecutive `(path, image)` of one size; only one batch of decoded images is held at a time.

    Only images of the same size share a batch: in a padded batch DETR's backbone convolutions see the zeros
    next to a smaller image (the original DETR too; only the transformer is masked), which shifts its scores a
    little. Batching equal sizes only keeps the detections independent of `batch_size`.
    """
    batch: list[tuple[Path, Image.Image]] = []
    for path in paths:
        try:
            image = open_image(path)
        except ValueError as err:
            report(f"skipped {path}: {err}")
            bar.update(1)
            continue
        if batch and (len(batch) == batch_size or image.size != batch[0][1].size):
            yield batch
            batch = []
        batch.append((path, image))
    if batch:
        yield batch


def _drawing_names(paths: Sequence[Path]) -> dict[Path, str]:
    """`<stem>.png` per input; files sharing a stem (a/x.jpg, b/x.png) get `<stem>_1.png`, `<stem>_2.png`, ..."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        name, counter = f"{path.stem}.png", 0
        while name in used:
            counter += 1
            name = f"{path.stem}_{counter}.png"
        used.add(name)
        names[path] = name
    return names


def _check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N').") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu.")
    return device


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class PredictArguments:
    """Arguments of `scripts/predict.py`."""

    model: str = field(metadata={"help": "Checkpoint folder or Hub id."})
    inputs: list[str] = field(metadata={"help": "Image files, folders (their image files) or globs ('**' recurses)."})
    output: str | None = field(default=None, metadata={"help": "Write the JSON here (default: standard output)."})
    draw: str | None = field(default=None, metadata={"help": "Write a PNG per image with the detections drawn here."})
    threshold: float = field(default=0.5, metadata={"help": "Keep detections scoring above this."})
    top_k: int | None = field(default=None, metadata={"help": "Keep at most this many detections per image."})
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    device: str = field(default="cpu", metadata={"help": "'cpu' or 'cuda' (or 'cuda:N')."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must be in [0, 1]; got {self.threshold}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top_k must be >= 1; got {self.top_k}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1; got {self.batch_size}.")


def run_predict(args: PredictArguments, report: Reporter | None = None) -> int:
    """Predicts, writes the JSON (and drawings); the exit code: 0 if at least one image was processed, else 1."""
    report = report or _print_warning
    found = find_images(args.inputs)
    for problem in found.problems:
        report(problem)
    detector = ObjectDetector.from_pretrained(args.model, args.device)
    draw_dir = Path(args.draw) if args.draw else None
    records = predict_files(detector, found.paths, args.threshold, args.top_k, args.batch_size, draw_dir, report)
    text = json.dumps(records, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    skipped = len(found.paths) - len(records)
    if skipped:
        report(f"{skipped} of {len(found.paths)} files could not be read and were skipped.")
    if not records:
        print("error: no image could be processed.", file=sys.stderr)
        return 1
    return 0
