"""Segmentation inference over image files (behind `scripts/predict.py --task panoptic|instance`).

    segmenter = ImageSegmenter.from_pretrained("outputs/detr-custom/last", task="panoptic")
    records = predict_segmentation_files(segmenter, find_images(["photos/"]).paths, threshold=0.5)

A record per image: `{"file", "width", "height", "segments": [{"id", "score", "label", "label_id", "area", "box",
"rle"}]}`, best first. `area` is the segment's pixel count and `box` its `[x0, y0, x1, y1]` extent (the last pixel
+ 1) in the image as opened; `rle` is the mask as a COCO run-length encoding (`{"size": [height, width], "counts":
"<compressed string>"}`, decoded by `pycocotools.mask.decode`), so the JSON holds every mask exactly at a small
fraction of its pixel count.

- `panoptic`: non-overlapping segments, every pixel to at most one (`post_process_panoptic_segmentation`, as
  `pipeline("image-segmentation")` calls it: no class is fused, since a checkpoint does not say which are stuff);
- `instance`: one mask per kept query, masks may overlap (`post_process_instance_masks`, the original
  `PostProcessSegm`, the masks mask AP scores).

Each image runs at its own size (`forward_by_image_size`), so the batch size never changes a segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from image_processing.image_processing_detr_custom import DetrCustomImageProcessor
from modeling_detr_custom.apps.visualize import draw_segments
from modeling_detr_custom.data.images import open_image
from modeling_detr_custom.evaluation.loop import forward_by_image_size
from modeling_detr_custom.model.modeling_segmentation import DetrCustomForSegmentation

__all__ = ["SEGMENTATION_TASKS", "ImageSegmenter", "predict_segmentation_files"]

SEGMENTATION_TASKS = ("panoptic", "instance")


class ImageSegmenter:
    """A segmentation model and its image processor on a device: images in, segments out.

    Args:
        model: A `DetrCustomForSegmentation` (or any model with `logits` and `pred_masks` outputs).
        processor: Its image processor.
        device: Where to run the model.
        task: "panoptic" (non-overlapping segments) or "instance" (a mask per query, overlaps allowed).
    """

    def __init__(self, model: torch.nn.Module, processor: Any, device: str | torch.device = "cpu",
                 task: str = "panoptic") -> None:  # fmt: skip
        if task not in SEGMENTATION_TASKS:
            raise ValueError(f"task must be one of {list(SEGMENTATION_TASKS)}; got {task!r}.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.task = task
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: str | torch.device = "cpu", task: str = "panoptic") -> Any:
        """Loads a segmentation checkpoint (ours, or transformers' `DetrForSegmentation` format)."""
        model = DetrCustomForSegmentation.from_pretrained(checkpoint)
        return cls(model, DetrCustomImageProcessor.from_pretrained(checkpoint), device, task)

    @torch.inference_mode()
    def segment(self, images: Sequence[Image.Image], threshold: float = 0.5) -> list[list[dict[str, Any]]]:
        """Segments per image, best first: `{"id", "score", "label", "label_id", "area", "box", "rle", "mask"}`
        (`mask` a `(height, width)` bool array, for drawing; not written to JSON)."""
        if not images:
            return []
        inputs = self.processor(images=list(images), return_tensors="pt")
        records: list[list[dict[str, Any]]] = [[] for _ in images]
        pixel_values, pixel_mask = inputs["pixel_values"].to(self.device), inputs["pixel_mask"].to(self.device)
        for indices, outputs in forward_by_image_size(self.model, pixel_values, pixel_mask):
            target_sizes = [(images[i].height, images[i].width) for i in indices]
            for i, masks in zip(indices, self._masks(outputs, threshold, target_sizes)):
                records[i] = [self._record(number, *mask) for number, mask in enumerate(masks, start=1)]
                records[i].sort(key=lambda record: -record["score"])
        return records

    def _masks(
        self, outputs: Any, threshold: float, target_sizes: list[tuple[int, int]]
    ) -> list[list[tuple[np.ndarray, float, int]]]:
        """Per image `(mask, score, label_id)` of every segment."""
        if self.task == "instance":
            results = self.processor.post_process_instance_masks(
                outputs, threshold=threshold, target_sizes=target_sizes
            )
            return [list(zip(r["masks"].cpu().numpy(), r["scores"].tolist(), r["labels"].tolist())) for r in results]
        results = self.processor.post_process_panoptic_segmentation(
            outputs, threshold=threshold, target_sizes=target_sizes
        )
        return [
            [((r["segmentation"] == s["id"]).cpu().numpy(), float(s["score"]), int(s["label_id"]))
             for s in r["segments_info"]]
            for r in results
        ]  # fmt: skip

    def _record(self, number: int, mask: np.ndarray, score: float, label_id: int) -> dict[str, Any]:
        rows, columns = np.nonzero(mask)
        box = [int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1] if len(rows) else None
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {
            "id": number,
            "score": round(float(score), 5),
            "label": self.id2label.get(label_id, str(label_id)),
            "label_id": label_id,
            "area": int(mask.sum()),
            "box": box,
            "rle": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "mask": mask,
        }


def predict_segmentation_files(
    segmenter: ImageSegmenter,
    paths: Sequence[Path],
    threshold: float = 0.5,
    batch_size: int = 8,
    draw_dir: Path | None = None,
    report: Any = None,
    draw_scale: float = 1.0,
    labels: bool = True,
) -> list[dict[str, Any]]:
    """Runs `segmenter` over image files in batches; unreadable files (and videos) are reported and skipped.

    Returns:
        One record per readable image, in input order (see the module docstring); with `draw_dir`, a
        `<name>.png` per image with the segments drawn (a semi-transparent colour each, `"label score"` tags).
    """
    from modeling_detr_custom.apps.predict import _drawing_names, _print_warning
    from modeling_detr_custom.apps.video import is_video

    report = report or _print_warning
    names = _drawing_names(paths) if draw_dir is not None else {}
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    readable: list[tuple[Path, Image.Image]] = []
    for path in tqdm(paths, unit="file", desc="segment", disable=None):
        if is_video(path):
            report(f"skipped {path}: videos are not segmented (--task detection runs on videos).")
            continue
        try:
            readable.append((path, open_image(path)))
        except ValueError as err:
            report(f"skipped {path}: {err}")
            continue
        if len(readable) == batch_size:
            records += _segment_batch(segmenter, readable, threshold, draw_dir, names, draw_scale, labels)
            readable = []
    records += _segment_batch(segmenter, readable, threshold, draw_dir, names, draw_scale, labels)
    return records


def _segment_batch(
    segmenter: ImageSegmenter,
    batch: list[tuple[Path, Image.Image]],
    threshold: float,
    draw_dir: Path | None,
    names: dict[Path, str],
    draw_scale: float,
    labels: bool,
) -> list[dict[str, Any]]:
    records = []
    for (path, image), segments in zip(batch, segmenter.segment([image for _, image in batch], threshold)):
        if draw_dir is not None:
            draw_segments(image, segments, scale=draw_scale, labels=labels).save(draw_dir / names[path])
        written = [{key: value for key, value in segment.items() if key != "mask"} for segment in segments]
        records.append({"file": str(path), "width": image.width, "height": image.height, "segments": written})
    return records
