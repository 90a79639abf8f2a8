"""DETR image processor: resize, normalise and pad images, turn COCO annotations into targets, post-process.

Differences from transformers' `DetrImageProcessor` (5.x), on purpose:

- Box targets are normalised by the resized image *before* padding (the original DETR's semantics). transformers
  rescales them to the padded canvas, which squashes predictions on non-square images in mixed-size batches.
- The resized image never exceeds `longest_edge` (transformers returns e.g. a 100 x 1335 image unchanged).
- RGBA images lose their alpha channel (transformers composites them onto white); 16-bit images are scaled by
  1/65535; float images are taken as already in [0, 1], so `do_rescale` applies to integer images only.
- `post_process_object_detection` clips boxes to the image and has an optional `top_k`.
- `class_labels` are the annotations' `category_id` values as given. The data layer maps dataset category ids to
  contiguous labels in `[0, num_labels)` before calling the processor (see `modeling_detr_custom.data`).

Pixel values equal the torchvision backend of transformers' processor: images are resized as uint8 with the
same torchvision kernel and normalised with the same fused mean/std arithmetic.

Only relative imports of sibling modules and third-party packages: this file is copied next to Hub checkpoints
loaded with `trust_remote_code`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

from .box_ops import box_cxcywh_to_xyxy, box_xywh_to_xyxy, box_xyxy_to_cxcywh

__all__ = [
    "DetrCustomImageProcessor",
    "get_output_image_size",
    "get_size_with_aspect_ratio",
    "image_to_tensor",
    "parse_coco_detection_annotation",
]

ImageInput = PIL.Image.Image | np.ndarray | Tensor

ACCEPTED_IMAGES = (
    "a PIL image, a numpy array or a torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in (1, 3, 4) "
    "and dtype uint8, uint16 or float in [0, 1], or a list of these"
)
ACCEPTED_SIZES = (
    '{"shortest_edge", "longest_edge"}, {"shortest_edge"}, {"longest_edge"}, {"height", "width"} or '
    '{"max_height", "max_width"}'
)
_SIZE_KEY_SETS = (
    {"shortest_edge", "longest_edge"},
    {"shortest_edge"},
    {"longest_edge"},
    {"height", "width"},
    {"max_height", "max_width"},
)
_DEFAULT_LONGEST_EDGE = 1333
_UINT16_MAX = 65535.0
_OVERRIDABLE = (
    "do_resize",
    "size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_pad",
    "pad_size",
    "do_convert_annotations",
)


class DetrCustomImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments `from_pretrained(..., **kwargs)` forwards to the processor."""

    format: str
    do_convert_annotations: bool


# ----------------------------------------------------------------------------------------------------------------
# Output sizes
# ----------------------------------------------------------------------------------------------------------------


def get_size_with_aspect_ratio(
    height: int, width: int, shortest_edge: int, longest_edge: int | None = None
) -> tuple[int, int]:
    """Output `(height, width)` for a shortest-edge resize with an optional cap on the longest edge.

    Equal to transformers' `get_size_with_aspect_ratio` whenever that one respects the cap (it computes the long
    side from the unrounded short side, unlike the original DETR which can exceed the cap by a few pixels). Where
    transformers returns an image unchanged although its long side exceeds the cap (e.g. 100 x 1335 for 800/1333),
    the long side is brought down to the cap. Sides are at least 1 pixel.
    """
    short, long = min(height, width), max(height, width)
    target_short: int = shortest_edge
    unrounded_short: float = float(shortest_edge)
    capped = longest_edge is not None and long / short * shortest_edge > longest_edge
    if capped:
        unrounded_short = longest_edge * short / long
        target_short = int(round(unrounded_short))
    if short == target_short and not (capped and long > longest_edge):
        return height, width
    new_short = max(target_short, 1)
    new_long = max(int(unrounded_short * long / short), 1)
    return (new_long, new_short) if width < height else (new_short, new_long)


def get_output_image_size(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """Output `(height, width)` of the resize step for a validated `size` dict (see `ACCEPTED_SIZES`).

    - `{"shortest_edge", "longest_edge"}` / `{"shortest_edge"}`: `get_size_with_aspect_ratio`;
    - `{"longest_edge"}`: the longest side becomes `longest_edge`, aspect ratio kept (transformers' convention);
    - `{"max_height", "max_width"}`: the largest size within both limits, aspect ratio kept;
    - `{"height", "width"}`: exactly that size.
    """
    if "shortest_edge" in size:
        return get_size_with_aspect_ratio(height, width, size["shortest_edge"], size.get("longest_edge"))
    if "longest_edge" in size:
        long = size["longest_edge"]
        short = max(int(min(height, width) * long / max(height, width)), 1)
        return (long, short) if height >= width else (short, long)
    if "max_height" in size:
        scale = min(size["max_height"] / height, size["max_width"] / width)  # transformers' arithmetic
        return max(int(height * scale), 1), max(int(width * scale), 1)
    return size["height"], size["width"]


def _validate_size(size: Any, max_size: int | None = None, name: str = "size") -> dict[str, int]:
    """Returns `size` as a dict with one of the accepted key sets; an int is a shortest edge (legacy configs)."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size, "longest_edge": max_size or _DEFAULT_LONGEST_EDGE}
    if not isinstance(size, Mapping):
        raise TypeError(f"`{name}` must be a dict with keys {ACCEPTED_SIZES}; got {size!r}.")
    size = {key: value for key, value in size.items() if value is not None}
    if set(size) not in _SIZE_KEY_SETS:
        raise ValueError(f"`{name}` must have keys {ACCEPTED_SIZES}; got {sorted(size)}.")
    for key, value in size.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}[{key!r}]` must be a positive int; got {value!r}.")
    return {key: int(value) for key, value in size.items()}


def _validate_pad_size(pad_size: Any) -> dict[str, int] | None:
    if pad_size is None:
        return None
    keys = {key for key, value in pad_size.items() if value is not None} if isinstance(pad_size, Mapping) else None
    if keys != {"height", "width"}:
        raise ValueError(f'`pad_size` must be None or a dict {{"height": int, "width": int}}; got {pad_size!r}.')
    return _validate_size({"height": pad_size["height"], "width": pad_size["width"]}, name="pad_size")


# ----------------------------------------------------------------------------------------------------------------
# Image inputs
# ----------------------------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, PIL.Image.Image):
        return f"PIL image of mode {value.mode!r} and size {value.size}"
    return type(value).__name__


def _pil_to_array(image: PIL.Image.Image) -> np.ndarray:
    """`(H, W, C)` or `(H, W)` array: uint8, uint16 for 16-bit modes, float32 for mode "F"; alpha dropped."""
    mode = image.mode
    if mode in ("RGB", "L", "F"):
        return np.array(image)
    if mode == "RGBA":
        return np.array(image)[..., :3]
    if mode == "LA":
        return np.array(image)[..., 0]
    if mode.startswith("I;16") or mode == "I":
        array = np.array(image)
        if mode == "I" and (array.min() < 0 or array.max() > _UINT16_MAX):
            raise ValueError(f"PIL image of mode 'I' has values outside [0, 65535]: {array.min()}..{array.max()}.")
        return array.astype(np.uint16)
    return np.array(image.convert("RGB"))


def _to_supported_dtype(tensor: Tensor, index: int, original: Any) -> Tensor:
    """uint8 stays uint8; uint16 becomes float32 in [0, 1]; floats become float32 and must be in [0, 1]."""
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.dtype == torch.uint16:
        return tensor.to(torch.float32) / _UINT16_MAX
    if not tensor.is_floating_point():
        raise TypeError(
            f"Image {index} is a {_describe(original)}: integer images must be uint8 (or uint16 for 16-bit data); "
            "cast with `.astype(np.uint8)` / `.to(torch.uint8)`. Accepted: " + ACCEPTED_IMAGES + "."
        )
    tensor = tensor.to(torch.float32)
    if tensor.numel() > 0:
        low, high = torch.aminmax(tensor)
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise ValueError(
                f"Image {index} is a {_describe(original)} with values in [{low.item():.4g}, {high.item():.4g}]: "
                "float images must be in [0, 1] (divide 0-255 data by 255 or pass uint8)."
            )
    return tensor


def _to_channels_first(tensor: Tensor, prefer_channels_last: bool, index: int, original: Any) -> Tensor:
    """`(C, H, W)` view of a `(H, W)`, `(H, W, C)` or `(C, H, W)` tensor; ambiguous shapes follow the library."""
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3:
        first_ok, last_ok = tensor.shape[0] in (1, 3, 4), tensor.shape[-1] in (1, 3, 4)
        if last_ok and (prefer_channels_last or not first_ok):
            return tensor.permute(2, 0, 1)  # (H, W, C) -> (C, H, W), a view
        if first_ok:
            return tensor
    raise ValueError(f"Image {index} is a {_describe(original)}. Accepted: {ACCEPTED_IMAGES}.")


def _array_to_tensor(array: np.ndarray, index: int) -> Tensor:
    """A tensor sharing memory with `array` where possible; uint16 arrays become float32 in [0, 1]."""
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.uint16:
        return torch.from_numpy(array.astype(np.float32) / np.float32(_UINT16_MAX))
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        array = array.copy()  # torch needs writable memory with non-negative strides
    try:
        return torch.from_numpy(array)
    except TypeError:
        raise TypeError(f"Image {index} is a {_describe(array)}. Accepted: {ACCEPTED_IMAGES}.") from None


def image_to_tensor(image: ImageInput, index: int = 0) -> Tensor:
    """Converts one input image to a `(3, H, W)` tensor: uint8 for 8-bit inputs, float32 in [0, 1] otherwise.

    Grayscale is repeated to 3 channels, alpha is dropped, 16-bit data is scaled by 1/65535. Arrays and PIL images
    are read as `(H, W, C)` when the shape allows it, tensors as `(C, H, W)`. The result may be a view of the
    input with channels-last strides (resizing those is faster); it is never written to.

    Raises:
        TypeError: unsupported type or integer dtype. ValueError: unsupported shape, float values outside [0, 1].
    """
    if isinstance(image, PIL.Image.Image):
        tensor, prefer_channels_last = _array_to_tensor(_pil_to_array(image), index), True
    elif isinstance(image, np.ndarray):
        tensor, prefer_channels_last = _array_to_tensor(image, index), True
    elif isinstance(image, Tensor):
        tensor, prefer_channels_last = image.detach(), False
    else:
        raise TypeError(f"Image {index} is a {_describe(image)}. Accepted: {ACCEPTED_IMAGES}.")
    tensor = _to_channels_first(tensor, prefer_channels_last, index, image)
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"Image {index} is empty: {_describe(image)}.")
    tensor = _to_supported_dtype(tensor, index, image)
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
    return tensor[:3]


def make_list_of_images(images: Any) -> list[Any]:
    """One image, a list/tuple of images, or a 4-D array/tensor (a batch) -> a non-empty list of images."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"`images` is an empty {type(images).__name__}. Accepted: {ACCEPTED_IMAGES}.")
        return list(images)
    if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError(f"`images` is an empty batch: {_describe(images)}.")
        return list(images)
    return [images]


# ----------------------------------------------------------------------------------------------------------------
# Annotations
# ----------------------------------------------------------------------------------------------------------------


def _parse_object(obj: Any, image_id: Any, index: int) -> tuple[list[float], int, float, int]:
    where = f"image_id {image_id!r}, annotation {index}"
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a dict with 'bbox' and 'category_id'; got {type(obj).__name__}.")
    for key in ("bbox", "category_id"):
        if key not in obj:
            raise ValueError(f"{where}: missing {key!r} (keys present: {sorted(obj)}).")
    try:
        x, y, w, h = (float(v) for v in obj["bbox"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h]; got {obj['bbox']!r}.") from None
    category_id, iscrowd = obj["category_id"], obj.get("iscrowd", 0)
    if not isinstance(category_id, (int, np.integer)) or isinstance(category_id, bool):
        raise ValueError(f"{where}: 'category_id' must be an int; got {category_id!r}.")
    if iscrowd not in (0, 1):
        raise ValueError(f"{where}: 'iscrowd' must be 0 or 1; got {iscrowd!r}.")
    area = obj.get("area")
    area = w * h if area is None else float(area)
    if not all(np.isfinite(v) for v in (x, y, w, h, area)):
        raise ValueError(f"{where}: 'bbox' or 'area' contains NaN or inf: bbox {obj['bbox']!r}, area {area}.")
    if w < 0 or h < 0:
        raise ValueError(f"{where}: 'bbox' [x, y, w, h] has a negative width or height: {obj['bbox']!r}.")
    return [x, y, w, h], int(category_id), area, int(iscrowd)


def parse_coco_detection_annotation(annotation: Any, index: int = 0) -> dict[str, Any]:
    """Validates one image's COCO detection annotation and returns its objects as tensors (crowd included).

    Args:
        annotation: `{"image_id": int, "annotations": [{"bbox": [x, y, w, h], "category_id": int,
            "area": float, "iscrowd": 0 | 1}, ...]}`; `area` defaults to `w * h`, `iscrowd` to 0.
        index: Position of the image in the batch, for error messages.

    Returns:
        `image_id` (int), `boxes_xywh` `(n, 4)` float32, `category_ids` `(n,)` int64, `area` `(n,)` float32,
        `iscrowd` `(n,)` int64.

    Raises:
        ValueError: naming the image id and annotation index (missing key, NaN, negative width/height, ...).
    """
    if not isinstance(annotation, Mapping) or "image_id" not in annotation or "annotations" not in annotation:
        raise ValueError(
            f"Annotation {index} must be a dict {{'image_id': int, 'annotations': [...]}}; "
            f"got {annotation if not isinstance(annotation, Mapping) else sorted(annotation)!r}."
        )
    image_id, objects = annotation["image_id"], annotation["annotations"]
    if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
        raise ValueError(f"Annotation {index}: 'image_id' must be an int; got {image_id!r}.")
    if not isinstance(objects, Sequence) or isinstance(objects, str):
        raise ValueError(f"image_id {image_id!r}: 'annotations' must be a list; got {type(objects).__name__}.")
    parsed = [_parse_object(obj, image_id, j) for j, obj in enumerate(objects)]
    boxes, category_ids, areas, iscrowd = zip(*parsed) if parsed else ((), (), (), ())
    return {
        "image_id": int(image_id),
        "boxes_xywh": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "category_ids": torch.tensor(category_ids, dtype=torch.int64),
        "area": torch.tensor(areas, dtype=torch.float32),
        "iscrowd": torch.tensor(iscrowd, dtype=torch.int64),
    }


def _prepare_target(annotation: Any, index: int, image_size: tuple[int, int]) -> dict[str, Tensor]:
    """The original DETR's `ConvertCocoPolysToMask`: drop crowd, clip to the image, drop empty boxes."""
    parsed = parse_coco_detection_annotation(annotation, index)
    height, width = image_size
    not_crowd = parsed["iscrowd"] == 0
    boxes_xyxy = box_xywh_to_xyxy(parsed["boxes_xywh"][not_crowd])
    boxes_xyxy[:, 0::2] = boxes_xyxy[:, 0::2].clamp(min=0, max=width)
    boxes_xyxy[:, 1::2] = boxes_xyxy[:, 1::2].clamp(min=0, max=height)
    keep = (boxes_xyxy[:, 2] > boxes_xyxy[:, 0]) & (boxes_xyxy[:, 3] > boxes_xyxy[:, 1])
    return {
        "image_id": torch.tensor([parsed["image_id"]], dtype=torch.int64),
        "class_labels": parsed["category_ids"][not_crowd][keep],
        "boxes_xyxy": boxes_xyxy[keep],
        "area": parsed["area"][not_crowd][keep],
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
    }


def _finalize_target(
    target: dict[str, Tensor], new_size: tuple[int, int], do_convert_annotations: bool
) -> dict[str, Tensor]:
    """Scales a prepared target to the resized image: normalised cxcywh boxes (or absolute xyxy), scaled area."""
    orig_height, orig_width = target["orig_size"].tolist()
    ratio_height, ratio_width = new_size[0] / orig_height, new_size[1] / orig_width
    boxes_xyxy = target["boxes_xyxy"]
    if do_convert_annotations:
        # Relative to the resized image before padding, i.e. to the original image: resizing cancels out.
        scale = torch.tensor([orig_width, orig_height, orig_width, orig_height], dtype=torch.float32)
        boxes = box_xyxy_to_cxcywh(boxes_xyxy) / scale
    else:
        boxes = boxes_xyxy * torch.tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    return {
        "image_id": target["image_id"],
        "class_labels": target["class_labels"],
        "boxes": boxes,
        "area": target["area"] * (ratio_width * ratio_height),
        "iscrowd": torch.zeros_like(target["class_labels"]),
        "orig_size": target["orig_size"],
        "size": torch.tensor(new_size, dtype=torch.int64),
    }


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """The processing options of one call: the processor's attributes with the call's overrides applied."""

    do_resize: bool
    size: dict[str, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    do_pad: bool
    pad_size: dict[str, int] | None
    do_convert_annotations: bool


def _validate_mean_std(value: Any, name: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if np.ndim(value) == 0 else [float(v) for v in value]
    if len(values) != 3 or not all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be a float or 3 floats (one per RGB channel); got {value!r}.")
    if name == "image_std" and min(values) <= 0:
        raise ValueError(f"`image_std` must be positive; got {value!r}.")
    return (values[0], values[1], values[2])


def _validate_settings(settings: _Settings) -> _Settings:
    if not settings.rescale_factor > 0:
        raise ValueError(f"`rescale_factor` must be positive; got {settings.rescale_factor!r}.")
    return replace(
        settings,
        size=_validate_size(settings.size),
        pad_size=_validate_pad_size(settings.pad_size),
        image_mean=_validate_mean_std(settings.image_mean, "image_mean"),
        image_std=_validate_mean_std(settings.image_std, "image_std"),
    )


class DetrCustomImageProcessor(BaseImageProcessor):
    r"""DETR image processor: resize, rescale, normalise, pad; COCO annotations to targets; post-processing.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): Resize to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 800, "longest_edge": 1333}`):
            One of `{"shortest_edge", "longest_edge"}`, `{"shortest_edge"}`, `{"longest_edge"}`,
            `{"height", "width"}`, `{"max_height", "max_width"}` (see `get_output_image_size`). An int is a
            shortest edge with `max_size` (default 1333) as longest edge, as in old DETR configs.
        resample (`int`, *optional*, defaults to `PILImageResampling.BILINEAR`): Only bilinear (2) is supported;
            resizing is antialiased.
        do_rescale (`bool`, *optional*, defaults to `True`): Multiply integer (uint8) images by `rescale_factor`.
            Float and 16-bit inputs are already in [0, 1] and are never rescaled.
        rescale_factor (`float`, *optional*, defaults to `1 / 255`).
        do_normalize (`bool`, *optional*, defaults to `True`): Subtract `image_mean`, divide by `image_std`.
        image_mean, image_std (`list[float]`, *optional*, default to the ImageNet statistics).
        do_pad (`bool`, *optional*, defaults to `True`): Pad bottom/right with zeros to the largest image of the
            batch, or to `pad_size`, and return `pixel_mask` (1 = real pixel, 0 = padding).
        pad_size (`dict[str, int]`, *optional*): `{"height", "width"}` to pad every image to.
        do_convert_annotations (`bool`, *optional*, defaults to `True`): Return boxes as normalised
            `(cx, cy, w, h)` relative to the resized, unpadded image; `False` returns absolute `(x0, y0, x1, y1)`
            in the resized image.
        format (`str`, *optional*, defaults to `"coco_detection"`): The only supported annotation format.

    Every option can be overridden per call: `processor(images, do_resize=False)`.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = DetrCustomImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int = PILImageResampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_pad: bool = True,
        pad_size: dict[str, int] | None = None,
        do_convert_annotations: bool = True,
        format: str = "coco_detection",
        **kwargs: Any,
    ) -> None:
        max_size = kwargs.pop("max_size", None)  # legacy DETR configs: {"size": 800, "max_size": 1333}
        do_pad = kwargs.pop("pad_and_return_pixel_mask", do_pad)
        super().__init__(**kwargs)
        if int(resample) != PILImageResampling.BILINEAR:
            raise ValueError(f"Only bilinear resampling (resample=2) is supported; got resample={resample!r}.")
        if str(getattr(format, "value", format)) != "coco_detection":
            raise ValueError(f"Only the 'coco_detection' annotation format is supported; got {format!r}.")
        settings = _Settings(
            do_resize=bool(do_resize),
            size=_validate_size(size if size is not None else {"shortest_edge": 800, "longest_edge": 1333}, max_size),
            do_rescale=bool(do_rescale),
            rescale_factor=float(rescale_factor),
            do_normalize=bool(do_normalize),
            image_mean=image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN,
            image_std=image_std if image_std is not None else IMAGENET_DEFAULT_STD,
            do_pad=bool(do_pad),
            pad_size=pad_size,
            do_convert_annotations=bool(do_convert_annotations),
        )
        settings = _validate_settings(settings)
        for name in _OVERRIDABLE:
            value = getattr(settings, name)
            setattr(self, name, list(value) if isinstance(value, tuple) else value)
        self.resample = int(resample)
        self.format = "coco_detection"

    def _settings(self, overrides: dict[str, Any]) -> _Settings:
        unknown = sorted(set(overrides) - set(_OVERRIDABLE))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown}; the options a call can override are {list(_OVERRIDABLE)}.")
        values = {name: overrides.get(name, getattr(self, name)) for name in _OVERRIDABLE}
        return _validate_settings(_Settings(**values))

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        annotations: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        return_tensors: str | None = "pt",
        **overrides: Any,
    ) -> BatchFeature:
        """Prepares images (and their COCO annotations) for the model. Same as `preprocess`.

        Args:
            images: One image or a list (see `ACCEPTED_IMAGES`).
            annotations: One COCO detection dict per image, `{"image_id": int, "annotations": [...]}`.
            return_tensors: `"pt"` (stacked tensors) or `None` (lists of per-image tensors).
            **overrides: Any constructor option, for this call only.

        Returns:
            `BatchFeature` with `pixel_values` `(batch_size, 3, height, width)` float32, `pixel_mask`
            `(batch_size, height, width)` int64 (1 = real pixel), and `labels` (list of dicts: `class_labels`
            `(n,)` int64, `boxes` `(n, 4)` float32, `area`, `iscrowd`, `image_id`, `orig_size`, `size`) when
            annotations are given.
        """
        return self.preprocess(images, annotations, return_tensors, **overrides)

    def preprocess(
        self,
        images: ImageInput | Sequence[ImageInput],
        annotations: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        return_tensors: str | None = "pt",
        **overrides: Any,
    ) -> BatchFeature:
        """See `__call__`."""
        settings = self._settings(overrides)
        stack = _validate_return_tensors(return_tensors)
        image_list = [image_to_tensor(image, i) for i, image in enumerate(make_list_of_images(images))]
        targets = None
        if annotations is not None:
            annotation_list = [annotations] if isinstance(annotations, Mapping) else list(annotations)
            if len(annotation_list) != len(image_list):
                raise ValueError(
                    f"Got {len(image_list)} images but {len(annotation_list)} annotations; pass one "
                    "{'image_id': ..., 'annotations': [...]} dict per image."
                )
            targets = [
                _prepare_target(annotation, i, tuple(image.shape[-2:]))
                for i, (annotation, image) in enumerate(zip(annotation_list, image_list))
            ]
        if settings.do_resize:
            image_list = [_resize(image, settings.size) for image in image_list]
        data = _normalize_and_pad(image_list, settings, stack)
        if targets is not None:
            data["labels"] = [
                _finalize_target(target, tuple(image.shape[-2:]), settings.do_convert_annotations)
                for target, image in zip(targets, image_list)
            ]
        return BatchFeature(data=data)

    def pad(
        self, images: Sequence[Tensor], return_tensors: str | None = "pt", pad_size: dict[str, int] | None = None
    ) -> BatchFeature:
        """Pads already processed images bottom/right with zeros (the collate function's padding).

        Labels need no change: boxes are relative to the unpadded image.

        Args:
            images: Tensors of shape `(3, height_i, width_i)` (e.g. `pixel_values[0]` of single-image calls).
            return_tensors: `"pt"` or `None` (lists).
            pad_size: `{"height", "width"}` to pad to; defaults to the largest height and width of `images`.

        Returns:
            `BatchFeature` with `pixel_values` `(batch_size, 3, height, width)` and `pixel_mask`
            `(batch_size, height, width)` int64, 1 = real pixel.
        """
        stack = _validate_return_tensors(return_tensors)
        if isinstance(images, Tensor) or not isinstance(images, Sequence) or len(images) == 0:
            raise ValueError(f"`images` must be a non-empty list of (3, H, W) tensors; got {_describe(images)}.")
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != images[0].shape[0]:
                raise ValueError(
                    f"images[{i}] must be a tensor of shape (C, H, W) like images[0]; got {_describe(image)}."
                )
        settings = _Settings(
            do_resize=False, size={}, do_rescale=False, rescale_factor=1.0, do_normalize=False,
            image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), do_pad=True,
            pad_size=_validate_pad_size(pad_size), do_convert_annotations=True,
        )  # fmt: skip
        return BatchFeature(data=_normalize_and_pad(list(images), settings, stack))

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.5,
        target_sizes: Tensor | Sequence[Sequence[int]] | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Turns model outputs into scored boxes per image.

        Softmax over the classes, the "no object" column (the last) dropped, best class per query, queries with
        `score > threshold` kept (in query order; with `top_k`, the `top_k` best of them, best first), boxes to
        absolute `(x0, y0, x1, y1)` in each image's `target_sizes` and clipped to it.

        Args:
            outputs: Anything with `logits` `(batch_size, num_queries, num_labels + 1)` and `pred_boxes`
                `(batch_size, num_queries, 4)` normalised cxcywh, as attributes or keys (e.g. a `ModelOutput`).
            threshold: Keep queries whose score is above this.
            target_sizes: `(height, width)` per image, a list of pairs or a `(batch_size, 2)` tensor, usually the
                original image sizes. `None` returns boxes normalised to [0, 1].
            top_k: Keep at most this many detections per image.

        Returns:
            One dict per image: `scores` `(n,)`, `labels` `(n,)` int64, `boxes` `(n, 4)` xyxy.
        """
        logits, pred_boxes = _get_detection_outputs(outputs)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be None or a positive int; got {top_k!r}.")
        scale = _target_scale(target_sizes, logits.shape[0], pred_boxes.device)  # (B, 4) as (w, h, w, h)
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q)
        boxes_xyxy = box_cxcywh_to_xyxy(pred_boxes) * scale[:, None, :]  # (B, Q, 4)
        boxes_xyxy = torch.minimum(boxes_xyxy.clamp(min=0), scale[:, None, :])
        results = []
        for image_scores, image_labels, image_boxes in zip(scores, labels, boxes_xyxy):
            keep = image_scores > threshold
            image_scores, image_labels, image_boxes = image_scores[keep], image_labels[keep], image_boxes[keep]
            if top_k is not None:
                order = image_scores.argsort(descending=True)[:top_k]
                image_scores, image_labels, image_boxes = image_scores[order], image_labels[order], image_boxes[order]
            results.append({"scores": image_scores, "labels": image_labels, "boxes": image_boxes})
        return results


# ----------------------------------------------------------------------------------------------------------------
# Pixel operations and output helpers
# ----------------------------------------------------------------------------------------------------------------


def _resize(image: Tensor, size: dict[str, int]) -> Tensor:
    """Bilinear, antialiased resize of a `(3, H, W)` tensor; uint8 stays uint8 (transformers' torchvision path)."""
    new_size = get_output_image_size(image.shape[-2], image.shape[-1], size)
    return tvF.resize(image, list(new_size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)


def _affine(image: Tensor, settings: _Settings) -> tuple[Tensor, Tensor] | None:
    """`(3, 1, 1)` scale and bias with `output = image * scale + bias`; None when the output is the input.

    `(image / 255 - mean) / std` folded into one multiply-add: float32 results within 1e-6 of transformers'
    `(image - 255 mean) / (255 std)`, in one pass over the pixels instead of three.
    """
    rescale = settings.rescale_factor if settings.do_rescale and image.dtype == torch.uint8 else 1.0
    if settings.do_normalize:
        mean = torch.tensor(settings.image_mean, dtype=torch.float64)
        std = torch.tensor(settings.image_std, dtype=torch.float64)
        scale, bias = rescale / std, -mean / std
    elif rescale != 1.0:
        scale, bias = torch.full((3,), rescale, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    else:
        return None
    return scale.view(3, 1, 1).to(torch.float32).to(image.device), bias.view(3, 1, 1).to(torch.float32).to(image.device)


def _write_normalized(out: Tensor, image: Tensor, affine: tuple[Tensor, Tensor] | None) -> None:
    """Writes the rescaled/normalised `image` `(C, h, w)` into the float32 view `out` of the same shape."""
    if affine is None:
        out.copy_(image)
    else:
        torch.addcmul(affine[1], image, affine[0], out=out)


def _canvas_size(images: list[Tensor], settings: _Settings) -> tuple[int, int]:
    max_height = max(image.shape[-2] for image in images)
    max_width = max(image.shape[-1] for image in images)
    if settings.pad_size is None:
        return max_height, max_width
    height, width = settings.pad_size["height"], settings.pad_size["width"]
    if max_height > height or max_width > width:
        index = next(i for i, image in enumerate(images) if image.shape[-2] > height or image.shape[-1] > width)
        raise ValueError(
            f"Image {index} has size {tuple(images[index].shape[-2:])} after resizing, larger than "
            f"pad_size {settings.pad_size}; increase pad_size or resize to at most that size."
        )
    return height, width


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zero tensor; on CPU allocated by numpy, whose `calloc` gets fresh pages that are already zero.

    The padded batch is large (16 images padded to 1333 x 1333 are 341 MB of pixels and 227 MB of mask), and
    `torch.zeros` writes every byte, then the pixels are written again. With `calloc` only the real pixels are
    written; the padding is zero without being touched.
    """
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    numpy_dtype = {torch.float32: np.float32, torch.int64: np.int64}[dtype]
    return torch.from_numpy(np.zeros(shape, dtype=numpy_dtype))


def _normalize_and_pad(images: list[Tensor], settings: _Settings, stack: bool) -> dict[str, Any]:
    """Normalises every image straight into the zero-initialised padded batch: one pass over the real pixels."""
    sizes = [tuple(image.shape[-2:]) for image in images]
    affines = {image.dtype: _affine(image, settings) for image in images} if images[0].shape[0] == 3 else {}
    if not settings.do_pad and not stack:
        outputs = [torch.empty(image.shape, dtype=torch.float32, device=image.device) for image in images]
        for out, image in zip(outputs, images):
            _write_normalized(out, image, affines.get(image.dtype))
        masks = [torch.ones(size, dtype=torch.int64, device=out.device) for size, out in zip(sizes, outputs)]
        return {"pixel_values": outputs, "pixel_mask": masks}
    if not settings.do_pad and len(set(sizes)) > 1:
        raise ValueError(
            f"do_pad=False but the images have different sizes after resizing ({sorted(set(sizes))}); set "
            'do_pad=True, resize to a fixed {"height", "width"}, or pass return_tensors=None for a list.'
        )
    height, width = _canvas_size(images, settings)
    channels, device = images[0].shape[0], images[0].device
    pixel_values = _zeros((len(images), channels, height, width), torch.float32, device)
    pixel_mask = _zeros((len(images), height, width), torch.int64, device)
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        _write_normalized(pixel_values[i, :, :h, :w], image, affines.get(image.dtype))
        pixel_mask[i, :h, :w] = 1
    if stack:
        return {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
    return {"pixel_values": list(pixel_values), "pixel_mask": list(pixel_mask)}


def _validate_return_tensors(return_tensors: Any) -> bool:
    """True for stacked tensors ("pt"), False for lists (None)."""
    if return_tensors is None:
        return False
    if str(getattr(return_tensors, "value", return_tensors)) == "pt":
        return True
    raise ValueError(f"`return_tensors` must be 'pt' or None; got {return_tensors!r}.")


def _get_detection_outputs(outputs: Any) -> tuple[Tensor, Tensor]:
    def field(name: str) -> Any:
        if isinstance(outputs, Mapping):
            return outputs.get(name)
        return getattr(outputs, name, None)

    logits, pred_boxes = field("logits"), field("pred_boxes")
    if not isinstance(logits, Tensor) or not isinstance(pred_boxes, Tensor):
        raise TypeError(
            "`outputs` must have tensors `logits` (batch_size, num_queries, num_labels + 1) and `pred_boxes` "
            f"(batch_size, num_queries, 4), as attributes or keys; got {type(outputs).__name__}."
        )
    if (
        logits.ndim != 3
        or pred_boxes.ndim != 3
        or pred_boxes.shape[-1] != 4
        or logits.shape[:2] != pred_boxes.shape[:2]
    ):
        raise ValueError(
            f"`logits` must be (batch_size, num_queries, num_labels + 1) and `pred_boxes` (batch_size, num_queries, "
            f"4); got {tuple(logits.shape)} and {tuple(pred_boxes.shape)}."
        )
    return logits, pred_boxes


def _target_scale(target_sizes: Any, batch_size: int, device: torch.device) -> Tensor:
    """`(batch_size, 4)` float32 `(w, h, w, h)` per image; ones when `target_sizes` is None."""
    if target_sizes is None:
        return torch.ones((batch_size, 4), dtype=torch.float32, device=device)
    sizes = torch.as_tensor(
        target_sizes.tolist() if isinstance(target_sizes, Tensor) else target_sizes, dtype=torch.float32
    )
    if sizes.shape != (batch_size, 2) or not bool((sizes > 0).all()):
        raise ValueError(
            f"`target_sizes` must give a positive (height, width) for each of the {batch_size} images; "
            f"got shape {tuple(sizes.shape)}."
        )
    heights, widths = sizes.to(device).unbind(1)
    return torch.stack([widths, heights, widths, heights], dim=1)
