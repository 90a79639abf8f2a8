"""Box-aware training augmentation: the original DETR recipe on (PIL image, COCO annotations) pairs.

Every transform is called as `transform(image, annotations, generator)` and returns a new `(image, annotations)`
pair; `annotations` is one image's COCO detection dict, `{"image_id": int, "annotations": [{"bbox": [x, y, w, h],
"category_id": int, "area": float, "iscrowd": 0 | 1}, ...]}`. Working on COCO annotations (not on normalised
targets) keeps the image processor the only place that turns annotations into model labels:

    image, annotations = train_transform(image, annotations, generator)
    features = processor(image, annotations, do_resize=False)   # normalise, labels relative to this image

Boxes follow the pixels (flip, resize, crop); areas are scaled with a resize and recomputed as the clipped box
area after a crop (as the original); objects cut out entirely are dropped together with their other fields, so
`iscrowd` and `category_id` stay attached to their boxes. A `segmentation` given as a binary `(height, width)` array
(the data layer decodes polygons, RLE and panoptic PNGs to arrays when masks are wanted) follows the pixels too
(flipped, resized nearest, cropped); polygons, RLE and `keypoints` are dropped since they are not transformed.
All randomness comes from the `torch.Generator` passed in, so a seeded generator gives the same result on every run.
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision.ops import box_convert

from .annotations import parse_coco_detection_annotation
from .sizes import DEFAULT_LONGEST_EDGE, get_size_with_aspect_ratio

__all__ = [
    "Compose",
    "DEFAULT_CROP_RANGE",
    "DEFAULT_CROP_SCALES",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_SCALES",
    "RandomHorizontalFlip",
    "RandomResize",
    "RandomSelect",
    "RandomSizeCrop",
    "Transform",
    "crop",
    "hflip",
    "LIGHT_SCALES",
    "make_detr_train_transform",
    "make_light_train_transform",
    "resize",
]

Annotations = dict[str, Any]

DEFAULT_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
DEFAULT_MAX_SIZE = DEFAULT_LONGEST_EDGE
DEFAULT_CROP_SCALES = (400, 500, 600)
DEFAULT_CROP_RANGE = (384, 600)
LIGHT_SCALES = (704, 736, 768, 800)  # the top of DETR's scales: at most 12% smaller than evaluation
_UNTRANSFORMED_KEYS = ("segmentation", "keypoints", "num_keypoints")
MaskOperation = Callable[[np.ndarray], np.ndarray]


class Transform(Protocol):
    """What every transform of this module is: a callable on (image, annotations, generator)."""

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]: ...


# ----------------------------------------------------------------------------------------------------------------
# Deterministic operations
# ----------------------------------------------------------------------------------------------------------------


def _check_image(image: Any) -> PIL.Image.Image:
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(
            f"Training transforms take a PIL image (decode with PIL.Image.open); got {type(image).__name__}."
        )
    return image


def _objects(annotations: Annotations) -> tuple[Tensor, Tensor, Tensor]:
    """Validated `(n, 4)` float32 xyxy boxes, `(n,)` areas and `(n,)` crowd flags of `annotations`."""
    parsed = parse_coco_detection_annotation(annotations)
    return box_convert(parsed["boxes_xywh"], "xywh", "xyxy"), parsed["area"], parsed["iscrowd"]


def _rebuild(
    annotations: Annotations,
    boxes_xyxy: Tensor,
    areas: Tensor,
    keep: Tensor | None = None,
    mask_operation: MaskOperation | None = None,
) -> Annotations:
    """A new annotations dict with updated `bbox`/`area` for the kept objects; other fields copied, and binary
    array masks passed through `mask_operation` (None: unchanged)."""
    boxes_xywh = box_convert(boxes_xyxy, "xyxy", "xywh").tolist()
    areas_list = areas.tolist()
    kept = range(len(boxes_xywh)) if keep is None else keep.nonzero().flatten().tolist()
    objects = []
    for j in kept:
        obj = {k: v for k, v in annotations["annotations"][j].items() if k not in _UNTRANSFORMED_KEYS}
        obj["bbox"], obj["area"] = boxes_xywh[j], areas_list[j]
        mask = annotations["annotations"][j].get("segmentation")
        if isinstance(mask, (np.ndarray, Tensor)):
            mask = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask, dtype=bool)
            obj["segmentation"] = mask if mask_operation is None else mask_operation(mask)
        objects.append(obj)
    return {"image_id": annotations["image_id"], "annotations": objects}


def hflip(image: PIL.Image.Image, annotations: Annotations) -> tuple[PIL.Image.Image, Annotations]:
    """Mirrors the image left-right and the boxes with it (`x -> width - x`)."""
    width = _check_image(image).width
    boxes_xyxy, areas, _ = _objects(annotations)
    flipped = torch.stack(
        [width - boxes_xyxy[:, 2], boxes_xyxy[:, 1], width - boxes_xyxy[:, 0], boxes_xyxy[:, 3]], dim=-1
    )
    flipped_annotations = _rebuild(annotations, flipped, areas, mask_operation=lambda mask: mask[:, ::-1].copy())
    return image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT), flipped_annotations


def resize(
    image: PIL.Image.Image, annotations: Annotations, size: int, max_size: int | None = None
) -> tuple[PIL.Image.Image, Annotations]:
    """Resizes the shortest edge to `size` (longest edge at most `max_size`), bilinear; boxes and areas scaled.

    The output size is the image processor's (`get_size_with_aspect_ratio`), which never exceeds `max_size`.
    """
    width, height = _check_image(image).size
    new_height, new_width = get_size_with_aspect_ratio(height, width, size, max_size)
    boxes_xyxy, areas, _ = _objects(annotations)
    if (new_height, new_width) == (height, width):
        return image, _rebuild(annotations, boxes_xyxy, areas)
    ratio_width, ratio_height = new_width / width, new_height / height
    scaled = boxes_xyxy * torch.tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    resized = image.resize((new_width, new_height), PIL.Image.Resampling.BILINEAR)

    def resize_mask(mask: np.ndarray) -> np.ndarray:
        pixels = PIL.Image.fromarray(mask.astype(np.uint8)).resize(
            (new_width, new_height), PIL.Image.Resampling.NEAREST
        )
        return np.asarray(pixels).astype(bool)

    return resized, _rebuild(annotations, scaled, areas * (ratio_width * ratio_height), mask_operation=resize_mask)


def _crop_boxes(boxes_xyxy: Tensor, top: int, left: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes shifted into and clipped to the crop window, their areas, and which of them keep a positive area."""
    shifted = boxes_xyxy - torch.tensor([left, top, left, top], dtype=boxes_xyxy.dtype)
    clipped = torch.minimum(shifted.clamp(min=0), torch.tensor([width, height, width, height], dtype=shifted.dtype))
    widths, heights = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    return clipped, widths * heights, (widths > 0) & (heights > 0)


def crop(
    image: PIL.Image.Image, annotations: Annotations, top: int, left: int, height: int, width: int
) -> tuple[PIL.Image.Image, Annotations]:
    """Crops the window `(top, left, height, width)`; boxes clipped, areas recomputed, empty boxes dropped."""
    _check_image(image)
    boxes_xyxy, _, _ = _objects(annotations)
    clipped, areas, keep = _crop_boxes(boxes_xyxy, top, left, height, width)
    cropped = image.crop((left, top, left + width, top + height))
    window = (slice(top, top + height), slice(left, left + width))
    return cropped, _rebuild(annotations, clipped, areas, keep, mask_operation=lambda mask: mask[window].copy())


# ----------------------------------------------------------------------------------------------------------------
# Random transforms
# ----------------------------------------------------------------------------------------------------------------


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in `[low, high]`, both included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


def _check_probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Probability must be in [0, 1]; got {p!r}.")
    return float(p)


def _check_sizes(sizes: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(sizes, int) or len(sizes) == 0 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive ints; got {sizes!r}.")
    return tuple(sizes)


class Compose:
    """Applies transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]:
        for transform in self.transforms:
            image, annotations = transform(image, annotations, generator)
        return image, annotations

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomHorizontalFlip:
    """Flips left-right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_probability(p)

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]:
        if _rand(generator) < self.p:
            return hflip(image, annotations)
        return image, annotations

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomResize:
    """Resizes the shortest edge to a size drawn uniformly from `sizes`, the longest edge at most `max_size`."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes = _check_sizes(sizes, "sizes")
        if max_size is not None and (not isinstance(max_size, int) or max_size <= 0):
            raise ValueError(f"`max_size` must be None or a positive int; got {max_size!r}.")
        self.max_size = max_size

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]:
        size = self.sizes[_randint(0, len(self.sizes) - 1, generator)]
        return resize(image, annotations, size, self.max_size)

    def __repr__(self) -> str:
        return f"RandomResize(sizes={list(self.sizes)}, max_size={self.max_size})"


class RandomSizeCrop:
    """Crops a random window with sides drawn uniformly in `[min_size, max_size]` (at most the image size).

    Unlike the original, a window that would cut out every (non-crowd) object of an image that has some is
    redrawn, up to `max_tries` times; if all tries fail the image is returned uncropped. An image smaller than
    `min_size` is cropped within its own size instead of raising.
    """

    def __init__(self, min_size: int, max_size: int, max_tries: int = 10) -> None:
        if not (isinstance(min_size, int) and isinstance(max_size, int) and 0 < min_size <= max_size):
            raise ValueError(f"Need 0 < min_size <= max_size (ints); got min_size={min_size!r}, max_size={max_size!r}.")
        if not isinstance(max_tries, int) or max_tries < 1:
            raise ValueError(f"`max_tries` must be a positive int; got {max_tries!r}.")
        self.min_size, self.max_size, self.max_tries = min_size, max_size, max_tries

    def _draw_window(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        crop_width = _randint(min(self.min_size, width), min(width, self.max_size), generator)
        crop_height = _randint(min(self.min_size, height), min(height, self.max_size), generator)
        top = _randint(0, height - crop_height, generator)
        left = _randint(0, width - crop_width, generator)
        return top, left, crop_height, crop_width

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]:
        width, height = _check_image(image).size
        boxes_xyxy, _, iscrowd = _objects(annotations)
        objects = iscrowd == 0
        had_objects = bool((_crop_boxes(boxes_xyxy, 0, 0, height, width)[2] & objects).any())
        for _ in range(self.max_tries):
            window = self._draw_window(height, width, generator)
            if not had_objects or bool((_crop_boxes(boxes_xyxy, *window)[2] & objects).any()):
                return crop(image, annotations, *window)
        return image, annotations

    def __repr__(self) -> str:
        return f"RandomSizeCrop(min_size={self.min_size}, max_size={self.max_size}, max_tries={self.max_tries})"


class RandomSelect:
    """Applies `first` with probability `p`, otherwise `second`."""

    def __init__(self, first: Transform, second: Transform, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, _check_probability(p)

    def __call__(
        self, image: PIL.Image.Image, annotations: Annotations, generator: torch.Generator | None = None
    ) -> tuple[PIL.Image.Image, Annotations]:
        if _rand(generator) < self.p:
            return self.first(image, annotations, generator)
        return self.second(image, annotations, generator)

    def __repr__(self) -> str:
        return f"RandomSelect({self.first!r}, {self.second!r}, p={self.p})"


def make_detr_train_transform(
    scales: Sequence[int] = DEFAULT_SCALES,
    max_size: int | None = DEFAULT_MAX_SIZE,
    crop_scales: Sequence[int] = DEFAULT_CROP_SCALES,
    crop_range: tuple[int, int] = DEFAULT_CROP_RANGE,
    hflip: bool = True,
) -> Compose:
    """The original DETR training augmentation, with its scales as parameters.

    Flip with p=0.5; then with p=0.5 resize the shortest edge to one of `scales` (longest at most `max_size`),
    otherwise resize to one of `crop_scales`, crop a window with sides in `crop_range`, and resize to one of
    `scales`. The defaults are the original's (480..800 step 32, 1333; 400/500/600; 384..600). For small images,
    e.g. 128-256 px synthetic data: `scales=(128, 160, 192, 224, 256), max_size=400, crop_scales=(128, 160, 192),
    crop_range=(96, 160)`. `hflip=False` leaves out the flip (orientation-sensitive data: text, arrows, left/right
    classes).
    """
    if len(crop_range) != 2:
        raise ValueError(f"`crop_range` must be (min_size, max_size); got {crop_range!r}.")
    return Compose(
        ([RandomHorizontalFlip(0.5)] if hflip else [])
        + [
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose(
                    [
                        RandomResize(crop_scales),
                        RandomSizeCrop(crop_range[0], crop_range[1]),
                        RandomResize(scales, max_size=max_size),
                    ]
                ),
            ),
        ]
    )


def make_light_train_transform(
    scales: Sequence[int] = LIGHT_SCALES, max_size: int | None = DEFAULT_MAX_SIZE, hflip: bool = True
) -> Compose:
    """A milder augmentation for small data sets or fine-tuning: flip with p=0.5 (unless `hflip=False`) and a
    resize of the shortest edge to one of `scales` (the top of DETR's range, longest edge at most `max_size`); no
    crop, so no object is ever cut."""
    return Compose(([RandomHorizontalFlip(0.5)] if hflip else []) + [RandomResize(scales, max_size=max_size)])
