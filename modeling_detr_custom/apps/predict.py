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
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from image_processing.image_processing_detr_custom import DetrCustomImageProcessor
from modeling_detr_custom.apps.loading import load_detector
from modeling_detr_custom.apps.video import VIDEO_EXTENSIONS, VideoWriter, is_video, read_frames, video_fps
from modeling_detr_custom.apps.visualize import draw_detections
from modeling_detr_custom.data.images import open_image
from modeling_detr_custom.evaluation.loop import forward_by_image_size
from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig
from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection

__all__ = [
    "IMAGE_EXTENSIONS",
    "FoundImages",
    "ObjectDetector",
    "store_matmul_weights_in",
    "PredictArguments",
    "find_images",
    "predict_files",
    "predict_video",
    "run_predict",
]

BACKENDS = ("torch", "onnxruntime")
DTYPES = ("fp32", "bf16")
IMAGE_EXTENSIONS = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_INPUT_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARACTERS = frozenset("*?[")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")

Reporter = Callable[[str], None]
TASKS = ("detection", "panoptic", "instance")
TASK_HELP = (
    "'detection' (boxes), 'panoptic' (non-overlapping segments) or 'instance' (a mask per object, overlaps "
    "allowed); default: 'panoptic' for a segmentation checkpoint, else 'detection'. Segments are written with label, "
    "score, area (pixels), box and the mask as a COCO RLE, and drawn as semi-transparent colours."
)


@dataclass
class FoundImages:
    """The image files the inputs name, in order, and the inputs that named none."""

    paths: list[Path]
    problems: list[str]


def find_images(inputs: Sequence[str]) -> FoundImages:
    """Expands files, folders (their image and video files, sorted; not recursive) and globs (`**` recurses).

    A file named explicitly is always taken (an unreadable one is reported when it is read); folders and globs
    contribute files with an image or video extension (`IMAGE_EXTENSIONS`, `VIDEO_EXTENSIONS`, any case) only.
    Duplicates are dropped.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _INPUT_EXTENSIONS)
        elif _GLOB_CHARACTERS & set(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            found = [p for p in matches if p.is_file() and p.suffix.lower() in _INPUT_EXTENSIONS]
        else:
            problems.append(f"{item}: no such file or folder")
            continue
        if not found:
            problems.append(f"{item}: no image or video files ({', '.join(sorted(_INPUT_EXTENSIONS))})")
        paths.extend(found)
    return FoundImages(list(dict.fromkeys(paths)), problems)


def store_matmul_weights_in(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Keep the weights of the plain linear and convolution layers in autocast's `dtype`, in place.

    Autocast computes these layers in `dtype` anyway, but casts their fp32 weights at every call (its cast cache does
    not work under `inference_mode`): storing them cast gives the same numbers without that copy (measured ~15% of
    a bf16 DETR-R50 call). The backbone's folded convolutions keep their own cached cast; normalisation layers and
    embeddings stay fp32. For inference only: the model is no longer meant to be trained in fp32.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or type(module) is torch.nn.Conv2d:
            module.to(dtype)
    return model


class ObjectDetector:
    """A model and its image processor on a device: images in, detections out.

    Args:
        model: A DETR detection model (`logits`, `pred_boxes` outputs).
        processor: Its image processor (`DetrCustomImageProcessor`).
        device: Where to run the model.
        dtype: "fp32", or "bf16" (bfloat16 autocast of the PyTorch model: faster on CPUs with bf16 matmuls,
            scores within ~1e-2 of fp32).
        onnx_session: An onnxruntime `InferenceSession` of the exported model (`scripts/export_onnx.py`): run it
            instead of `model` (which then only provides the config); inputs `pixel_values`, `pixel_mask`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        onnx_session: Any = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}.")
        if onnx_session is not None and dtype != "fp32":
            raise ValueError("--dtype bf16 applies to the torch backend only; the ONNX model runs in its own dtype.")
        self.device = _check_device(device)
        self.model = model.to(self.device).eval()
        if dtype == "bf16" and onnx_session is None:
            store_matmul_weights_in(self.model, torch.bfloat16)
        self.processor = processor
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.dtype = dtype
        self.onnx_session = onnx_session

    @property
    def backend(self) -> str:
        """The backend that runs the network: "torch" or "onnxruntime"."""
        return "torch" if self.onnx_session is None else "onnxruntime"

    @classmethod
    def from_pretrained(
        cls, checkpoint: str, device: str | torch.device = "cpu", backend: str = "torch", dtype: str = "fp32"
    ) -> ObjectDetector:
        """Loads a checkpoint folder or Hub id (ours, or transformers' DETR format).

        With `backend="onnxruntime"` the folder's `model.onnx` (the output folder of `scripts/export_onnx.py`,
        which also holds the configs) is run; a checkpoint folder without one is exported first, to a temporary
        file, with dynamic sizes.

        Raises:
            ValueError: For an unusable device, backend or dtype, or a path that is neither a folder nor an
                `owner/name` Hub id.
        """
        device = _check_device(device)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}.")
        if not Path(checkpoint).is_dir() and not _HUB_ID.fullmatch(checkpoint):
            raise ValueError(f"--model {checkpoint}: no such checkpoint folder, and not a Hub id (owner/name).")
        if backend == "onnxruntime":
            processor = DetrCustomImageProcessor.from_pretrained(checkpoint)
            if device.type != "cpu":
                raise ValueError("--backend onnxruntime runs on the CPU here; use --device cpu.")
            session, model = _onnx_session(checkpoint)
            return cls(model, processor, device, dtype, onnx_session=session)
        model, processor = load_detector(checkpoint)
        return cls(model, processor, device, dtype)

    def _forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """`logits` and `pred_boxes` (float32) from the configured backend and dtype."""
        if self.onnx_session is not None:
            feed = {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()}
            if "target_sizes" in {node.name for node in self.onnx_session.get_inputs()}:  # --with_postprocess
                feed["target_sizes"] = np.ones((len(pixel_values), 2), dtype=np.int64)  # its boxes are not read
            logits, pred_boxes = self.onnx_session.run(["logits", "pred_boxes"], feed)
            return {"logits": torch.from_numpy(logits), "pred_boxes": torch.from_numpy(pred_boxes)}
        pixel_values, pixel_mask = pixel_values.to(self.device), pixel_mask.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return {"logits": outputs.logits.float(), "pred_boxes": outputs.pred_boxes.float()}

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
        records: list[list[dict[str, Any]]] = [[] for _ in images]
        # Each image at its own size, as evaluation does: padding would make detections depend on the batch.
        for indices, outputs in forward_by_image_size(self._forward, inputs["pixel_values"], inputs["pixel_mask"]):
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


@dataclass
class DrawOptions:
    """How `predict_files` draws: `scale` enlarges each picture first (small images), `labels` draws the tags."""

    scale: float = 1.0
    labels: bool = True

    def draw(self, image: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
        return draw_detections(image, detections, scale=self.scale, labels=self.labels)


def predict_files(
    detector: ObjectDetector,
    paths: Sequence[Path],
    threshold: float = 0.5,
    top_k: int | None = None,
    batch_size: int = 8,
    draw_dir: Path | None = None,
    report: Reporter | None = None,
    every_n_frames: int = 1,
    draw_options: DrawOptions | None = None,
) -> list[dict[str, Any]]:
    """Runs `detector` over image and video files in batches; unreadable files are reported and skipped.

    Args:
        detector: The model to run.
        paths: Image or video files (`is_video`: mp4, avi, mov, mkv, webm, m4v, animated GIF).
        threshold: Keep detections scoring above this.
        top_k: Keep at most this many detections per image.
        batch_size: Most images (or video frames) per forward pass (consecutive images of one size are batched).
        draw_dir: If given, write `<name>.png` per image (`<name>.mp4` per video) with the detections drawn here.
        report: Called with a one-line message for each skipped file (default: print to stderr).
        every_n_frames: In videos, run on frames 0, n, 2n, ...
        draw_options: Drawing scale and tags (default: `DrawOptions()`).

    Returns:
        One record per readable file, in input order: images `{"file", "width", "height", "detections"}`, videos
        `{"file", "width", "height", "fps", "frames": [{"frame", "time_s", "detections"}]}`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if every_n_frames < 1:
        raise ValueError(f"every_n_frames must be >= 1; got {every_n_frames}.")
    report = report or _print_warning
    draw_options = draw_options or DrawOptions()
    names = _drawing_names(paths) if draw_dir is not None else {}
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with tqdm(total=len(paths), unit="file", desc="predict", disable=None) as bar:
        images: list[Path] = []
        for path in [*paths, None]:  # images between videos are batched; None flushes the last ones
            if path is not None and not is_video(path):
                images.append(path)
                continue
            for batch in _readable_batches(images, batch_size, report, bar):
                detections = detector.detect([image for _, image in batch], threshold, top_k)
                for (image_path, image), image_detections in zip(batch, detections):
                    records.append({
                        "file": str(image_path), "width": image.width, "height": image.height,
                        "detections": image_detections,
                    })  # fmt: skip
                    if draw_dir is not None:
                        draw_options.draw(image, image_detections).save(draw_dir / names[image_path])
                bar.update(len(batch))
            images = []
            if path is None:
                break
            draw_path = draw_dir / Path(names[path]).with_suffix(".mp4") if draw_dir is not None else None
            try:
                records.append(
                    predict_video(detector, path, threshold, top_k, batch_size, every_n_frames, draw_path, draw_options)
                )
            except ValueError as err:
                report(f"skipped {path}: {err}")
            bar.update(1)
    return records


def predict_video(
    detector: ObjectDetector,
    path: Path,
    threshold: float = 0.5,
    top_k: int | None = None,
    batch_size: int = 8,
    every_n_frames: int = 1,
    draw_path: Path | None = None,
    draw_options: DrawOptions | None = None,
) -> dict[str, Any]:
    """Detections on every `every_n_frames`-th frame of a video (frames of one video share a batch exactly: they
    have one size), and with `draw_path` an annotated MPEG-4 video of those frames at `fps / every_n_frames`.

    Returns:
        `{"file", "width", "height", "fps", "frames": [{"frame", "time_s", "detections"}]}`.

    Raises:
        ValueError: The file cannot be read as a video.
    """
    draw_options = draw_options or DrawOptions()
    fps = video_fps(path)
    frames: list[dict[str, Any]] = []
    size = (0, 0)
    writer = VideoWriter(draw_path, fps / every_n_frames) if draw_path is not None else None
    batch: list[tuple[int, float, Image.Image]] = []

    def flush() -> None:
        detections = detector.detect([image for _, _, image in batch], threshold, top_k)
        for (index, time_s, image), image_detections in zip(batch, detections):
            frames.append({"frame": index, "time_s": time_s, "detections": image_detections})
            if writer is not None:
                writer.write(draw_options.draw(image, image_detections))
        batch.clear()

    try:
        for index, time_s, image in read_frames(path, every_n_frames):
            size = image.size
            batch.append((index, time_s, image))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    finally:
        if writer is not None:
            writer.close()
    if not frames:
        raise ValueError(f"Cannot read video {path}: no frames decoded.")
    return {"file": str(path), "width": size[0], "height": size[1], "fps": round(fps, 6), "frames": frames}


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


def _onnx_session(checkpoint: str) -> tuple[Any, DetrCustomForObjectDetection]:
    """An onnxruntime session of `checkpoint/model.onnx` (exported now if absent) and the model for its config."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError("--backend onnxruntime needs onnxruntime: pip install -e '.[deploy]'.") from err
    path = Path(checkpoint) / "model.onnx"
    if path.is_file():
        model = _ConfigOnly(DetrCustomConfig.from_pretrained(checkpoint))
    else:
        from modeling_detr_custom.apps.export_onnx import OnnxDetector, export_to_onnx, parity_inputs

        model = DetrCustomForObjectDetection.from_pretrained(checkpoint).eval()
        path = Path(tempfile.mkdtemp(prefix="detr-custom-onnx-")) / "model.onnx"
        example = parity_inputs(128, 128, dynamic=True, with_postprocess=False)[-1]
        export_to_onnx(OnnxDetector(model), example, path, dynamic=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, model


class _ConfigOnly(torch.nn.Module):
    """Stands for the PyTorch model where only its config is needed (onnxruntime runs the network)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config


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
    every_n_frames: int = field(default=1, metadata={"help": "In videos, run on every n-th frame (from frame 0)."})
    draw_scale: float = field(default=1.0, metadata={"help": "Enlarge pictures by this factor before drawing."})
    no_labels: bool = field(default=False, metadata={"help": "Draw boxes without the 'label score' tags."})
    backend: str = field(default="torch", metadata={"help": "'torch' or 'onnxruntime' (a folder's model.onnx)."})
    dtype: str = field(default="fp32", metadata={"help": "'fp32' or 'bf16' (bfloat16 autocast, torch backend)."})
    task: str | None = field(default=None, metadata={"help": TASK_HELP})

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"--task must be one of {', '.join(TASKS)}; got {self.task!r}.")
        if self.every_n_frames < 1:
            raise ValueError(f"--every_n_frames must be >= 1; got {self.every_n_frames}.")
        if not self.draw_scale > 0:
            raise ValueError(f"--draw_scale must be > 0; got {self.draw_scale}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {list(BACKENDS)}; got {self.backend!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {list(DTYPES)}; got {self.dtype!r}.")
        if self.backend == "onnxruntime" and self.dtype != "fp32":
            raise ValueError("--dtype bf16 applies to --backend torch only.")
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
    task, segmentation_checkpoint = _task_of(args)
    draw_dir = Path(args.draw) if args.draw else None
    if task != "detection":
        from modeling_detr_custom.apps.segment import ImageSegmenter, predict_segmentation_files

        segmenter = ImageSegmenter.from_pretrained(args.model, _check_device(args.device), task)
        records = predict_segmentation_files(
            segmenter, found.paths, args.threshold, args.batch_size, draw_dir, report, args.draw_scale,
            not args.no_labels,
        )  # fmt: skip
    else:
        detector = _detector_for(args, segmentation_checkpoint)
        draw_options = DrawOptions(scale=args.draw_scale, labels=not args.no_labels)
        records = predict_files(
            detector, found.paths, args.threshold, args.top_k, args.batch_size, draw_dir, report,
            args.every_n_frames, draw_options,
        )  # fmt: skip
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


def _task_of(args: PredictArguments) -> tuple[str, bool]:
    """The task to run (`--task`, else by the checkpoint's architecture) and whether the checkpoint segments.

    Raises:
        ValueError: `--task panoptic|instance` on a detection checkpoint, or with `--backend onnxruntime`.
    """
    if args.backend == "onnxruntime":
        if args.task not in (None, "detection"):
            raise ValueError(f"--task {args.task} runs with --backend torch (the ONNX export is the detector's).")
        return "detection", False
    if not Path(args.model).is_dir() and not _HUB_ID.fullmatch(args.model):
        raise ValueError(f"--model {args.model}: no such checkpoint folder, and not a Hub id (owner/name).")
    architectures = DetrCustomConfig.from_pretrained(args.model).architectures or []
    segmentation = any(str(name).endswith("ForSegmentation") for name in architectures)
    task = args.task or ("panoptic" if segmentation else "detection")
    if task != "detection" and not segmentation:
        raise ValueError(
            f"--task {task} needs a segmentation checkpoint; {args.model} is a detector ({', '.join(architectures)})."
        )
    return task, segmentation


def _detector_for(args: PredictArguments, segmentation_checkpoint: bool) -> ObjectDetector:
    """The detector of `--task detection`; for a segmentation checkpoint, its detection outputs (boxes)."""
    if not segmentation_checkpoint:
        return ObjectDetector.from_pretrained(args.model, args.device, args.backend, args.dtype)
    from modeling_detr_custom.model.modeling_segmentation import DetrCustomForSegmentation

    model = DetrCustomForSegmentation.from_pretrained(args.model)
    return ObjectDetector(model, DetrCustomImageProcessor.from_pretrained(args.model), args.device, args.dtype)
