"""DETR image processor: resize, normalise and pad images, turn COCO annotations into targets, post-process.

Differences from transformers' `DetrImageProcessor` (5.x), on purpose:

- Box targets are normalised by the resized image *before* padding (the original DETR's semantics). transformers
  rescales them to the padded canvas, which squashes predictions on non-square images in mixed-size batches.
- The resized image never exceeds `longest_edge` (transformers returns e.g. a 100 x 1335 image unchanged).
- RGBA images lose their alpha channel (transformers composites them onto white); 16-bit images are scaled by
  1/65535; float images are taken as already in [0, 1], so `do_rescale` applies to integer images only.
- `post_process_object_detection` clips boxes to the image and has an optional `top_k`.
- The segmentation post-processors take an optional `processed_sizes` (unpadded input sizes) that crops the masks
  to each image before resizing; without it their numbers are transformers' (see `segmentation_post_processing`).
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
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

from .annotations import finalize_target, prepare_target
from .image_inputs import ImageInput, describe, image_to_tensor, make_list_of_images
from .pipeline_batching import install_pipeline_collate
from .post_processing import post_process_object_detection
from .segmentation_masks import panoptic_to_detection
from .segmentation_post_processing import (
    Sizes,
    post_process_instance_masks,
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)
from .sizes import default_size, get_output_image_size, validate_pad_size, validate_size

__all__ = ["DetrCustomImageProcessor"]

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
    "do_convert_rgb",
    "format",
    "return_segmentation_masks",
    "masks_path",
    "input_data_format",
    "data_format",
)
_SUPPORTED_FORMAT = "coco_detection"  # the default
_KNOWN_FORMATS = ("coco_detection", "coco_panoptic")  # transformers' AnnotationFormat values
_DATA_FORMATS = ("channels_first", "channels_last")


class DetrCustomImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments `from_pretrained(..., **kwargs)` forwards to the processor."""

    format: str
    do_convert_annotations: bool


@dataclass(frozen=True)
class _Settings:
    """The processing options of one call: the processor's attributes with the call's overrides applied."""

    do_resize: bool
    size: dict[str, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    do_pad: bool
    pad_size: dict[str, int] | None
    do_convert_annotations: bool
    do_convert_rgb: bool | None = None
    format: str = _SUPPORTED_FORMAT
    return_segmentation_masks: bool = False
    masks_path: str | None = None
    input_data_format: str | None = None
    data_format: str = "channels_first"


def _validate_mean_std(value: Any, name: str, num_channels: int | None = None) -> tuple[float, ...]:
    values = [float(value)] * (num_channels or 3) if np.ndim(value) == 0 else [float(v) for v in value]
    if not values or not all(np.isfinite(values)) or (num_channels is not None and len(values) != num_channels):
        expected = f"{num_channels} floats (one per channel, as image_mean)" if num_channels else "floats"
        raise ValueError(f"`{name}` must be a float or {expected}; got {value!r}.")
    if name == "image_std" and min(values) <= 0:
        raise ValueError(f"`image_std` must be positive; got {value!r}.")
    return tuple(values)


def _validate_format(value: Any) -> str:
    """The annotation format, checked when a call uses it (as transformers' `AnnotationFormat(format)`)."""
    name = str(getattr(value, "value", value))
    if name not in _KNOWN_FORMATS:
        raise ValueError(f"{value!r} is not a valid annotation format; use one of {list(_KNOWN_FORMATS)}.")
    return name


def _validate_data_format(value: Any) -> str:
    name = str(getattr(value, "value", value))
    name = {"first": "channels_first", "last": "channels_last"}.get(name, name)
    if name not in _DATA_FORMATS:
        raise ValueError(f"data_format must be one of {list(_DATA_FORMATS)}; got {value!r}.")
    return name


def _validate_settings(settings: _Settings) -> _Settings:
    if not settings.rescale_factor > 0:
        raise ValueError(f"`rescale_factor` must be positive; got {settings.rescale_factor!r}.")
    image_mean = _validate_mean_std(settings.image_mean, "image_mean")
    image_std = _validate_mean_std(settings.image_std, "image_std", len(image_mean))
    return replace(
        settings,
        size=validate_size(settings.size),
        pad_size=validate_pad_size(settings.pad_size),
        image_mean=image_mean,
        image_std=image_std,
        data_format=_validate_data_format(settings.data_format),
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
        format (`str`, *optional*, defaults to `"coco_detection"`): `"coco_detection"` (objects with `bbox`,
            optionally `segmentation` as polygons, RLE or a binary array) or `"coco_panoptic"` (`segments_info`
            and the PNG of segment ids under `masks_path`; masks are always returned). Checked when a call uses
            it (an unknown format raises there, as in transformers).
        return_segmentation_masks (`bool`, *optional*, defaults to `False`): Also return `masks`
            `(n, height, width)` uint8 in each label, resized (nearest) and padded with the image.
        masks_path (`str`, *optional*): The folder of the panoptic PNGs (`format="coco_panoptic"`).
        do_convert_rgb (`bool`, *optional*): `True` composites transparency onto white (transformers'
            `convert_to_rgb`); otherwise the alpha channel is dropped.

    Every option can be overridden per call: `processor(images, do_resize=False)`; calls also take
    `input_data_format` (`"channels_first"`/`"channels_last"`, inferred when None) and `data_format`
    (`"channels_last"` returns `(batch_size, height, width, channels)` pixel values). With an `image_mean`/`image_std`
    of N values, images must have N channels and keep them (e.g. RGB + infrared).
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = DetrCustomImageProcessorKwargs
    # pipeline(..., batch_size=N) pads mixed sizes with a pixel_mask (see `pipeline_batching`)
    pads_pipeline_batches = True

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
        do_convert_rgb: bool | None = None,
        return_segmentation_masks: bool = False,
        masks_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        max_size = kwargs.pop("max_size", None)  # legacy DETR configs: {"size": 800, "max_size": 1333}
        do_pad = kwargs.pop("pad_and_return_pixel_mask", do_pad)
        super().__init__(**kwargs)
        if int(resample) != PILImageResampling.BILINEAR:
            raise ValueError(f"Only bilinear resampling (resample=2) is supported; got resample={resample!r}.")
        settings = _Settings(
            do_resize=bool(do_resize),
            size=validate_size(size if size is not None else default_size(), max_size),
            do_rescale=bool(do_rescale),
            rescale_factor=float(rescale_factor),
            do_normalize=bool(do_normalize),
            image_mean=image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN,
            image_std=image_std if image_std is not None else IMAGENET_DEFAULT_STD,
            do_pad=bool(do_pad),
            pad_size=pad_size,
            do_convert_annotations=bool(do_convert_annotations),
            do_convert_rgb=do_convert_rgb,
            format=str(getattr(format, "value", format)),  # checked at call time, as transformers
            return_segmentation_masks=bool(return_segmentation_masks),
            masks_path=None if masks_path is None else str(masks_path),
            data_format="channels_first",
        )
        settings = _validate_settings(settings)
        for name in _OVERRIDABLE:
            value = getattr(settings, name)
            setattr(self, name, list(value) if isinstance(value, tuple) else value)
        self.resample = int(resample)

    def _settings(self, overrides: dict[str, Any]) -> _Settings:
        unknown = sorted(set(overrides) - set(_OVERRIDABLE))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown}; the options a call can override are {list(_OVERRIDABLE)}.")
        values = {name: overrides.get(name, getattr(self, name, None)) for name in _OVERRIDABLE}
        values["data_format"] = values["data_format"] or "channels_first"
        values["format"] = values["format"] or _SUPPORTED_FORMAT
        values["return_segmentation_masks"] = bool(values["return_segmentation_masks"])
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
        panoptic = _validate_format(settings.format) == "coco_panoptic"
        stack = _validate_return_tensors(return_tensors)
        image_list = [
            image_to_tensor(image, i, len(settings.image_mean), settings.input_data_format, settings.do_convert_rgb)
            for i, image in enumerate(make_list_of_images(images))
        ]
        targets = None
        if annotations is not None:
            annotation_list = [annotations] if isinstance(annotations, Mapping) else list(annotations)
            if len(annotation_list) != len(image_list):
                raise ValueError(
                    f"Got {len(image_list)} images but {len(annotation_list)} annotations; pass one "
                    "{'image_id': ..., 'annotations': [...]} dict per image."
                )
            if panoptic:
                annotation_list = [
                    panoptic_to_detection(annotation, settings.masks_path, i)
                    for i, annotation in enumerate(annotation_list)
                ]
            with_masks = panoptic or settings.return_segmentation_masks
            targets = [
                prepare_target(annotation, i, tuple(image.shape[-2:]), with_masks)
                for i, (annotation, image) in enumerate(zip(annotation_list, image_list))
            ]
        if settings.do_resize:
            image_list = [_resize(image, settings.size) for image in image_list]
        data = _normalize_and_pad(image_list, settings, stack)
        if settings.data_format == "channels_last":
            data["pixel_values"] = _channels_last(data["pixel_values"])
        if targets is not None:
            data["labels"] = [
                finalize_target(target, tuple(image.shape[-2:]), settings.do_convert_annotations)
                for target, image in zip(targets, image_list)
            ]
            _pad_masks(data["labels"], data["pixel_mask"])
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
            raise ValueError(f"`images` must be a non-empty list of (3, H, W) tensors; got {describe(images)}.")
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != images[0].shape[0]:
                raise ValueError(
                    f"images[{i}] must be a tensor of shape (C, H, W) like images[0]; got {describe(image)}."
                )
        settings = _Settings(
            do_resize=False, size={}, do_rescale=False, rescale_factor=1.0, do_normalize=False,
            image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), do_pad=True,
            pad_size=validate_pad_size(pad_size), do_convert_annotations=True,
        )  # fmt: skip
        return BatchFeature(data=_normalize_and_pad(list(images), settings, stack))

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.5,
        target_sizes: Tensor | Sequence[Sequence[int]] | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Turns model outputs into scored boxes per image: see `post_processing.post_process_object_detection`."""
        return post_process_object_detection(outputs, threshold, target_sizes, top_k)

    def post_process_instance_masks(
        self,
        outputs: Any,
        threshold: float = 0.0,
        mask_threshold: float = 0.5,
        target_sizes: Sizes = None,
        **options: Any,
    ) -> list[dict[str, Tensor]]:
        """Overlapping per-query masks for mask AP: see `segmentation_post_processing.post_process_instance_masks`."""
        return post_process_instance_masks(outputs, threshold, mask_threshold, target_sizes, **options)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sizes = None, return_segmentation_scores: bool = False, **options: Any
    ) -> list[Any]:
        """Per-pixel class maps: see `segmentation_post_processing.post_process_semantic_segmentation`."""
        return post_process_semantic_segmentation(outputs, target_sizes, return_segmentation_scores, **options)

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Sizes = None,
        return_coco_annotation: bool | None = False,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Instance segments: see `segmentation_post_processing.post_process_instance_segmentation`."""
        return post_process_instance_segmentation(
            outputs, threshold, mask_threshold, overlap_mask_area_threshold, target_sizes, return_coco_annotation,
            **options,
        )  # fmt: skip

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: Sizes = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Panoptic segments: see `segmentation_post_processing.post_process_panoptic_segmentation`."""
        return post_process_panoptic_segmentation(
            outputs, threshold, mask_threshold, overlap_mask_area_threshold, label_ids_to_fuse, target_sizes, **options
        )


# ----------------------------------------------------------------------------------------------------------------
# Pixel operations and output helpers
# ----------------------------------------------------------------------------------------------------------------


def _resize(image: Tensor, size: dict[str, int]) -> Tensor:
    """Bilinear, antialiased resize of a `(3, H, W)` tensor; uint8 stays uint8 (transformers' torchvision path)."""
    new_size = get_output_image_size(image.shape[-2], image.shape[-1], size)
    return tvF.resize(image, list(new_size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)


def _affine(image: Tensor, settings: _Settings) -> tuple[Tensor, Tensor] | None:
    """`(C, 1, 1)` scale and bias with `output = image * scale + bias`; None when the output is the input.

    `(image / 255 - mean) / std` folded into one multiply-add: float32 results within 1e-6 of transformers'
    `(image - 255 mean) / (255 std)`, in one pass over the pixels instead of three.
    """
    rescale = settings.rescale_factor if settings.do_rescale and image.dtype == torch.uint8 else 1.0
    if settings.do_normalize:
        mean = torch.tensor(settings.image_mean, dtype=torch.float64)
        std = torch.tensor(settings.image_std, dtype=torch.float64)
        scale, bias = rescale / std, -mean / std
    elif rescale != 1.0:
        channels = image.shape[0]
        scale, bias = torch.full((channels,), rescale, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    else:
        return None
    return scale.view(-1, 1, 1).to(torch.float32).to(image.device), bias.view(-1, 1, 1).to(torch.float32).to(
        image.device
    )


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
    affines = {image.dtype: _affine(image, settings) for image in images}
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


def _pad_masks(labels: list[dict[str, Tensor]], pixel_mask: Tensor | list[Tensor]) -> None:
    """Pads each label's `masks` bottom/right with zeros to its image's padded size (in place)."""
    for label, image_mask in zip(labels, pixel_mask):
        masks = label.get("masks")
        if masks is not None and masks.shape[-2:] != image_mask.shape[-2:]:
            padded = torch.zeros((len(masks), *image_mask.shape[-2:]), dtype=masks.dtype)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            label["masks"] = padded


def _channels_last(pixel_values: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
    """`data_format="channels_last"`: `(B, H, W, C)` (or `(H, W, C)` per image), contiguous."""
    if isinstance(pixel_values, Tensor):
        return pixel_values.permute(0, 2, 3, 1).contiguous()
    return [image.permute(1, 2, 0).contiguous() for image in pixel_values]


def _validate_return_tensors(return_tensors: Any) -> bool:
    """True for stacked tensors ("pt"), False for lists (None)."""
    if return_tensors is None:
        return False
    if str(getattr(return_tensors, "value", return_tensors)) == "pt":
        return True
    raise ValueError(f"`return_tensors` must be 'pt' or None; got {return_tensors!r}.")


install_pipeline_collate()
