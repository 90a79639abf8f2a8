"""One entry point for every data source: `load_detection_split` -> `DetectionSplit`.

Sources: a folder in one of the layouts of `formats` (COCO, Roboflow COCO export, YOLO, Pascal VOC), anything
`datasets` opens in the object-detection schema (see `hf_datasets`), or `synthetic[:key=value,...]` (generated on
first use into `$DETR_CUSTOM_CACHE`, default `~/.cache/detr_custom`). Whatever the source, the split becomes validated
records, a `datasets.Dataset` with an image column (decoded lazily by `with_transform`), the in-memory
`pycocotools` ground truth (the data set's own category ids), and the category mapping.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image
from pycocotools.coco import COCO

from image_processing import DetrCustomImageProcessor
from image_processing.sizes import DEFAULT_LONGEST_EDGE, DEFAULT_SHORTEST_EDGE
from modeling_detr_custom.data.albumentations_adapter import AlbumentationsTransform, is_albumentations_compose
from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.data.coco import build_coco_gt
from modeling_detr_custom.data.coco_panoptic import PanopticGroundTruth, read_panoptic_split
from modeling_detr_custom.data.collate import DetectionCollator
from modeling_detr_custom.data.formats import FOLDER_FORMATS, FolderFormat, detect_folder_format
from modeling_detr_custom.data.hf_datasets import load_hf_split, read_hf_split
from modeling_detr_custom.data.images import ImageSource, check_images, open_image
from modeling_detr_custom.data.masks import (
    check_task,
    decoded_segmentations,
    keep_segmentations,
    object_masks,
    record_features,
)
from modeling_detr_custom.data.records import DataReport, ImageRecord, validate_records
from modeling_detr_custom.data.synthetic import SyntheticSpec, ensure_synthetic_dataset

__all__ = [
    "DetectionSplit",
    "DetectionTransform",
    "default_processor",
    "list_splits",
    "load_detection_split",
    "scaled_detr_train_transform",
    "scaled_light_train_transform",
]

logger = logging.getLogger(__name__)

# transform(image, {"image_id", "annotations": [...]}, generator) -> (image, annotations),
# see image_processing.augmentation.
Augmentation = Callable[[Image.Image, dict[str, Any], torch.Generator], tuple[Image.Image, dict[str, Any]]]

_LONGEST_PER_SHORTEST = DEFAULT_LONGEST_EDGE / DEFAULT_SHORTEST_EDGE  # the original DETR's resize ratio
_RECORD_FEATURES = datasets.Features(
    {
        "image": datasets.Image(decode=False),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "width": datasets.Value("int64"),
        "height": datasets.Value("int64"),
        "annotations": datasets.List(
            {
                "id": datasets.Value("int64"),
                "bbox": datasets.List(datasets.Value("float64"), length=4),
                "category_id": datasets.Value("int64"),
                "area": datasets.Value("float64"),
                "iscrowd": datasets.Value("int64"),
            }
        ),
    }
)


@dataclass
class DetectionSplit:
    """One split of a detection data set, ready for a `DataLoader`.

    Attributes:
        dataset: Items `{"pixel_values": (3, H, W) float32, "labels": dict}` (the processor's labels:
            `class_labels`, `boxes` normalised cxcywh, `image_id`, `orig_size`, ...), decoded on access.
        transform: The transform applied on access (`set_epoch` before each training epoch).
        raw: The same rows before the transform: `image` (`{"bytes", "path"}`), `image_id`, `file_name`,
            `width`, `height`, `annotations` (COCO, the data set's category ids).
        coco: The `pycocotools` ground truth of the split, for `CocoEvaluator`.
        mapping: Data set category ids <-> contiguous labels.
        processor: The image processor the items went through.
        collate_fn: Pads a list of items into a batch (see `DetectionCollator`).
        data_report: What was skipped (with `on_error="skip"`).
        source: The source as given.
        split: The split name.
        task: "detection", or "panoptic"/"instance": the items' labels also carry `masks` `(n, H, W)`.
        panoptic: The panoptic ground truth (PNGs, segments, things/stuff categories) of a panoptic split.
    """

    dataset: datasets.Dataset
    transform: DetectionTransform
    raw: datasets.Dataset
    coco: COCO
    mapping: CategoryMapping
    processor: Any
    collate_fn: DetectionCollator
    data_report: DataReport
    source: str
    split: str
    task: str = "detection"
    panoptic: PanopticGroundTruth | None = None

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's augmentation (each epoch draws new random crops, reproducibly)."""
        self.transform.epoch = epoch

    def report(self) -> str:
        """Summary of skipped images and annotations, `""` when nothing was skipped."""
        return self.data_report.report()

    def __len__(self) -> int:
        return len(self.dataset)


def load_detection_split(
    source: str,
    split: str,
    processor: Any = None,
    image_size: int | None = None,
    train: bool = False,
    augment: bool | str | Augmentation | Any | None = None,
    mapping: CategoryMapping | None = None,
    on_error: str = "raise",
    verify_images: bool | None = None,
    seed: int = 0,
    hflip: bool = True,
    task: str = "detection",
) -> DetectionSplit:
    """Loads, validates and wraps one split of a detection data set.

    Args:
        source: A COCO, Roboflow COCO, YOLO or Pascal VOC folder (`formats`), a `datasets` folder or Hub name, or
            `synthetic[:num_train=..,num_val=..,
            image_size=..,seed=..,max_objects=..]`.
        split: Split name (`train`, `val`, `train2017`, ...; `val` and `validation` stand for each other in
            `datasets` sources).
        processor: Image processor; default `default_processor(image_size or the data set's default)`.
        image_size: Shortest edge of the default processor: 800 for real data, the image size for synthetic data.
        train: Training split: augmentation on by default.
        augment: `"detr"` (or `True`) for DETR's training augmentation scaled to the processor's size (flip,
            multi-scale resize, random crop), `"light"` for flip and a mild multi-scale resize without crops,
            `"none"` (or `False`) for none; or your own: a callable `transform(image, annotations, generator)` or
            `transform(image, annotations)` on a PIL image and COCO annotations (`image_processing.augmentation`),
            or an albumentations `Compose` with `bbox_params` (`albumentations_adapter`). Default: `train`.
        mapping: Categories to use (pass the training split's mapping for the evaluation split); default: the
            data set's own.
        on_error: `"raise"` (stop at the first bad image or annotation, naming the file and annotation id) or
            `"skip"` (log it, drop it, count it in `report()`).
        verify_images: Fully decode every image up front to catch truncated files. Default: only when skipping
            (otherwise a truncated file raises when it is first read).
        seed: Seed of the augmentation; an image's augmentation depends only on (seed, epoch, image id).
        hflip: False leaves the horizontal flip out of `"detr"` and `"light"` (orientation-sensitive data).
        task: `"detection"`; `"instance"` (COCO objects with polygon/RLE `segmentation`, from COCO folders or
            synthetic) or `"panoptic"` (a COCO panoptic folder, or synthetic: segments of things and stuff are the
            objects) also give each item's labels `masks` (`data.masks`).

    Raises:
        ValueError: Bad data (with `on_error="raise"`), unknown options or a missing split.
        FileNotFoundError: A COCO folder without the split's annotation file.
    """
    report = DataReport(on_error, name=f"{source} [{split}]")
    panoptic = None
    if check_task(task) == "panoptic":
        records, sources, mapping, default_size, rows, panoptic = _read_panoptic(source, split, mapping, report)
    else:
        records, sources, mapping, default_size, rows = _read_source(source, split, mapping, report)
    if task != "detection" and rows is not None:
        raise ValueError(
            f"--task {task} reads masks from COCO folders (instances with polygon/RLE segmentation), COCO panoptic "
            f"folders or synthetic data; {source} is a `datasets` source."
        )
    _check_unique_image_ids(records, f"{source} [{split}]")
    verify = on_error == "skip" if verify_images is None else verify_images
    kept = _check_record_images(records, sources, verify, report)
    valid = validate_records([records[i] for i in kept], mapping, report)
    if task == "instance":
        valid = keep_segmentations([records[i] for i in kept], valid, report)
    raw = _records_dataset(records, kept, valid, rows, task)
    processor = processor if processor is not None else default_processor(image_size or default_size)
    augmentation = _resolve_augment(augment, train, processor, hflip)
    transform = DetectionTransform(processor, mapping, augmentation, seed=seed, task=task)
    num_objects = sum(len(r["annotations"]) for r in valid)
    logger.info(
        "Loaded %s [%s]: %d images, %d objects, %d categories.",
        source,
        split,
        len(raw),
        num_objects,
        mapping.num_labels,
    )
    return DetectionSplit(
        dataset=raw.with_transform(transform),
        transform=transform,
        raw=raw,
        coco=build_coco_gt(decoded_segmentations(valid) if task == "instance" else valid, mapping),
        mapping=mapping,
        processor=processor,
        collate_fn=DetectionCollator(processor),
        data_report=report,
        source=source,
        split=split,
        task=task,
        panoptic=panoptic,
    )


def list_splits(source: str) -> list[str]:
    """The split names a source has (a folder's, a `datasets` source's keys, `train` and `val` for synthetic)."""
    if source == "synthetic" or source.startswith("synthetic:"):
        return ["train", "val"]
    if Path(source).is_dir():
        folder_format = detect_folder_format(source)
        if folder_format is not None:
            return folder_format.splits(Path(source))
        if (Path(source) / "state.json").is_file():
            return ["train"]  # a single saved Dataset: the same rows whatever split is asked for
        return sorted(datasets.load_from_disk(source) if (Path(source) / "dataset_dict.json").is_file()
                      else datasets.load_dataset(source))  # fmt: skip
    return sorted(datasets.load_dataset(source))


def default_processor(shortest_edge: int = DEFAULT_SHORTEST_EDGE) -> Any:
    """A `DetrCustomImageProcessor` resizing to `shortest_edge`, longest edge at most `shortest_edge * 1333/800`."""
    longest_edge = round(shortest_edge * _LONGEST_PER_SHORTEST)
    return DetrCustomImageProcessor(size={"shortest_edge": shortest_edge, "longest_edge": longest_edge})


def _read_source(
    source: str, split: str, mapping: CategoryMapping | None, report: DataReport
) -> tuple[list[ImageRecord], Iterator[ImageSource] | list[str], CategoryMapping, int, datasets.Dataset | None]:
    """Records, their image sources, categories, default image size and (for `datasets`) the image rows."""
    if source == "synthetic" or source.startswith("synthetic:"):
        spec = SyntheticSpec.from_source(source)
        return _read_folder(FOLDER_FORMATS[0], ensure_synthetic_dataset(spec), split, mapping, report)
    if Path(source).is_dir():
        folder_format = detect_folder_format(source)  # raises, listing the layouts, when none matches
        if folder_format is not None:
            return _read_folder(folder_format, Path(source), split, mapping, report)
    elif Path(source).exists():
        raise ValueError(f"--data {source} is a file; give the data set's folder (or a Hub name, or 'synthetic').")
    description = f"{source} [{split}]"
    hf_split = load_hf_split(source, split)
    records, mapping = read_hf_split(hf_split, description, mapping)
    rows = hf_split.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    sources = (row["image"] for batch in rows.iter(batch_size=256) for row in _rows(batch))
    return records, sources, mapping, DEFAULT_SHORTEST_EDGE, rows


def _read_panoptic(
    source: str, split: str, mapping: CategoryMapping | None, report: DataReport
) -> tuple[list[ImageRecord], list[str], CategoryMapping, int, None, PanopticGroundTruth]:
    """A COCO panoptic split (of a folder, or of the synthetic data set): records, images, categories (things and
    stuff), default image size, and the ground truth of the panoptic quality."""
    if source == "synthetic" or source.startswith("synthetic:"):
        root = ensure_synthetic_dataset(SyntheticSpec.from_source(source))
    elif Path(source).is_dir():
        root = Path(source)
    else:
        raise ValueError(
            f"--task panoptic needs a COCO panoptic folder (annotations/panoptic_<split>.json + "
            f"annotations/panoptic_<split>/*.png + images) or 'synthetic'; got {source!r}."
        )
    records, file_mapping, info, ground_truth = read_panoptic_split(root, split, report)
    default_size = (
        int(info.get("image_size", DEFAULT_SHORTEST_EDGE)) if "generator_version" in info else DEFAULT_SHORTEST_EDGE
    )
    return records, [r["file_name"] for r in records], mapping or file_mapping, default_size, None, ground_truth


def _read_folder(
    folder_format: FolderFormat, root: Path, split: str, mapping: CategoryMapping | None, report: DataReport
) -> tuple[list[ImageRecord], list[str], CategoryMapping, int, None]:
    records, file_mapping, info = folder_format.read_split(root, split, report)
    # Our synthetic data set says its image size; real data gets DETR's 800.
    default_size = (
        int(info.get("image_size", DEFAULT_SHORTEST_EDGE)) if "generator_version" in info else DEFAULT_SHORTEST_EDGE
    )
    return records, [r["file_name"] for r in records], mapping or file_mapping, default_size, None


def _rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def _check_unique_image_ids(records: list[ImageRecord], description: str) -> None:
    seen: set[int] = set()
    for record in records:
        if record["image_id"] in seen:
            raise ValueError(
                f"{description}: image_id {record['image_id']} is used by more than one image (again by "
                f"{record['file_name']}); image ids must be unique for evaluation."
            )
        seen.add(record["image_id"])


def _check_record_images(records: list[ImageRecord], sources: Any, verify: bool, report: DataReport) -> list[int]:
    """Reads every image's size (decoding it fully if `verify`), fills in `width`/`height`; indices of the kept."""
    kept = []
    for index, (record, result) in enumerate(zip(records, check_images(sources, verify))):
        annotation_ids = [a.get("id") for a in record["annotations"]]
        shown = f"{annotation_ids[:10]}"[:-1] + (", ...]" if len(annotation_ids) > 10 else "]")
        where = f"(image_id {record['image_id']}, annotations {shown})"
        if isinstance(result, ValueError):
            report.problem(f"{result} {where}", skipped_images=1, skipped_annotations=len(annotation_ids))
            continue
        declared = (record["width"], record["height"])
        if declared != (None, None) and declared != result:
            hint = " (the declared size ignores the EXIF orientation tag)" if declared == result[::-1] else ""
            report.problem(
                f"Image {record['file_name']} {where} is {result[0]}x{result[1]} after EXIF orientation but the "
                f"annotations declare {declared[0]}x{declared[1]}{hint}; boxes cannot be trusted. Fix the "
                "width/height in the annotations (and the boxes if they were drawn on the other orientation).",
                skipped_images=1,
                skipped_annotations=len(annotation_ids),
            )
            continue
        record["width"], record["height"] = result
        kept.append(index)
    return kept


def _records_dataset(
    records: list[ImageRecord],
    kept: list[int],
    valid: list[ImageRecord],
    image_rows: datasets.Dataset | None,
    task: str = "detection",
) -> datasets.Dataset:
    """The kept, validated records as a `datasets.Dataset` with an `image` column.

    Images stored in a data set (`image_rows`, aligned with `records`) are joined column-wise and the kept rows
    selected afterwards, so image bytes are never copied.
    """
    names = ("image_id", "file_name", "width", "height", "annotations")
    if image_rows is None:
        names += ("panoptic_file",) if task == "panoptic" else ()
        columns = {name: [r[name] for r in valid] for name in names}
        columns["image"] = [r["file_name"] for r in valid]
        return datasets.Dataset.from_dict(columns, features=record_features(_RECORD_FEATURES, task))
    rows: list[ImageRecord] = [{**r, "annotations": []} for r in records]  # skipped rows: placeholders
    for index, record in zip(kept, valid):
        rows[index] = record
    features = datasets.Features({k: v for k, v in _RECORD_FEATURES.items() if k != "image"})
    meta = datasets.Dataset.from_dict({name: [r[name] for r in rows] for name in names}, features=features)
    joined = datasets.concatenate_datasets([image_rows, meta], axis=1)
    return joined if len(kept) == len(records) else joined.select(kept)


AUGMENTATIONS = ("detr", "light", "none")


def _resolve_augment(augment: Any, train: bool, processor: Any, hflip: bool = True) -> Augmentation | None:
    if augment is None:
        augment = train
    if isinstance(augment, bool):
        augment = "detr" if augment else "none"
    if isinstance(augment, str):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}.")
        if augment == "none":
            return None
        make = scaled_detr_train_transform if augment == "detr" else scaled_light_train_transform
        return make(_shortest_edge(processor), hflip=hflip)
    if is_albumentations_compose(augment):
        return AlbumentationsTransform(augment)
    if not callable(augment):
        raise TypeError(
            "augment must be 'detr', 'light', 'none', a bool, a callable transform(image, annotations[, generator]) "
            f"or an albumentations Compose; got {augment!r}."
        )
    return augment if _takes_generator(augment) else _WithoutGenerator(augment)


def _takes_generator(function: Any) -> bool:
    """Whether `function` accepts a third positional argument (the generator)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables: assume this package's protocol
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


class _WithoutGenerator:
    """A user's `transform(image, annotations)` called as `transform(image, annotations, generator)` (picklable).

    Its randomness is its own (e.g. Python's `random`), so it is not reproduced by a resumed run."""

    def __init__(self, function: Callable[[Image.Image, dict[str, Any]], tuple[Image.Image, dict[str, Any]]]) -> None:
        self.function = function

    def __call__(self, image: Image.Image, annotations: dict[str, Any], generator: Any = None) -> Any:
        return self.function(image, annotations)


def scaled_light_train_transform(shortest_edge: int, hflip: bool = True) -> Augmentation:
    """The "light" augmentation (flip, resize to one of the top of DETR's scales, no crop) scaled by
    `shortest_edge / 800`, as `scaled_detr_train_transform` scales the original recipe."""
    from image_processing.augmentation import DEFAULT_MAX_SIZE, LIGHT_SCALES, make_light_train_transform

    factor = shortest_edge / DEFAULT_SHORTEST_EDGE
    scales = tuple(sorted({max(round(size * factor), 1) for size in LIGHT_SCALES}))
    return make_light_train_transform(scales=scales, max_size=round(DEFAULT_MAX_SIZE * factor), hflip=hflip)


def scaled_detr_train_transform(shortest_edge: int, hflip: bool = True) -> Augmentation:
    """The original DETR augmentation with every size scaled by `shortest_edge / 800`.

    At 800 this is the original recipe (scales 480..800, longest edge 1333, crops); at 128 (the synthetic data)
    scales 77..128, longest edge 213, crop sides 61..96. `shortest_edge` is also the evaluation size, so
    training never sees images larger than evaluation does, as in the original.
    """
    from image_processing.augmentation import (
        DEFAULT_CROP_RANGE,
        DEFAULT_CROP_SCALES,
        DEFAULT_MAX_SIZE,
        DEFAULT_SCALES,
        make_detr_train_transform,
    )

    factor = shortest_edge / DEFAULT_SHORTEST_EDGE

    def scaled(sizes: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted({max(round(size * factor), 1) for size in sizes}))

    return make_detr_train_transform(
        scales=scaled(DEFAULT_SCALES),
        max_size=round(DEFAULT_MAX_SIZE * factor),
        crop_scales=scaled(DEFAULT_CROP_SCALES),
        crop_range=scaled(DEFAULT_CROP_RANGE),
        hflip=hflip,
    )


def _shortest_edge(processor: Any) -> int:
    size = getattr(processor, "size", None) or {}
    for key in ("shortest_edge", "height", "max_height", "longest_edge"):
        if key in size:
            return int(size[key])
    return DEFAULT_SHORTEST_EDGE


class DetectionTransform:
    """The on-the-fly transform of a `DetectionSplit` (a `with_transform` batch function; picklable).

    Per row: open the image (EXIF orientation, RGB), map category ids to contiguous labels, augment (training),
    run the processor (no resize after augmentation, which already chose the scale; the processor's resize
    otherwise).

    Args:
        processor: Image processor (`DetrCustomImageProcessor`).
        mapping: Data set category ids -> contiguous labels.
        augment: `transform(image, annotations, generator)` or None.
        task: `"panoptic"`/`"instance"`: each object also gets its mask (`segmentation`, a binary array that the
            augmentation transforms with the image), and the labels `masks`.
    """

    def __init__(
        self,
        processor: Any,
        mapping: CategoryMapping,
        augment: Augmentation | None = None,
        seed: int = 0,
        task: str = "detection",
    ) -> None:
        self.processor = processor
        self.mapping = mapping
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.task = task

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pixel_values, labels = [], []
        for row in _rows(batch):
            image, target = self._load(row)
            if self.augment is not None:
                # A function of (seed, epoch, image) only, not of the global random state: data loaders fetch
                # ahead of training, so a global stream would make a resumed run augment differently.
                generator = torch.Generator().manual_seed(self._augmentation_seed(row["image_id"]))
                image, target = self.augment(image, target, generator)
            encoded = self.processor(
                images=image,
                annotations=target,
                return_tensors="pt",
                do_resize=self.augment is None,
                return_segmentation_masks=self.task != "detection",
            )
            pixel_values.append(encoded["pixel_values"][0])  # (3, H, W)
            labels.append(encoded["labels"][0])
        return {"pixel_values": pixel_values, "labels": labels}

    def _augmentation_seed(self, image_id: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(image_id)) % 2**62

    def _load(self, row: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        file_name, image_id = row["file_name"], row["image_id"]
        image = open_image(row["image"], f"{file_name} (image_id {image_id})")
        if image.size != (row["width"], row["height"]):
            raise ValueError(
                f"Image {file_name} (image_id {image_id}) decodes to {image.width}x{image.height} after EXIF "
                f"orientation, but its annotations are for {row['width']}x{row['height']}."
            )
        annotations = [
            {
                "bbox": annotation["bbox"],
                "category_id": self.mapping.to_label(annotation["category_id"], annotation["id"], file_name),
                "area": annotation["area"],
                "iscrowd": annotation["iscrowd"],
            }
            for annotation in row["annotations"]
        ]
        if self.task != "detection":
            for annotation, mask in zip(annotations, object_masks(row, self.task, image.height, image.width)):
                annotation["segmentation"] = mask  # (H, W) bool, transformed with the image by the augmentation
        return image, {"image_id": image_id, "annotations": annotations}
