"""Image inputs of the processor: PIL images, numpy arrays and tensors of any supported layout and bit depth.

Only sibling imports and third-party packages: copied next to Hub checkpoints for `trust_remote_code`.
"""

from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor

__all__ = [
    "ACCEPTED_IMAGES",
    "ImageInput",
    "describe",
    "image_to_tensor",
    "make_list_of_images",
    "to_8bit_pil",
]

ImageInput = PIL.Image.Image | np.ndarray | Tensor

ACCEPTED_IMAGES = (
    "a PIL image, a numpy array or a torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in (1, 3, 4) "
    "and dtype uint8, uint16 or float in [0, 1], or a list of these"
)
_UINT16_MAX = 65535.0


def describe(value: Any) -> str:
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
            f"Image {index} is a {describe(original)}: integer images must be uint8 (or uint16 for 16-bit data); "
            "cast with `.astype(np.uint8)` / `.to(torch.uint8)`. Accepted: " + ACCEPTED_IMAGES + "."
        )
    tensor = tensor.to(torch.float32)
    if tensor.numel() > 0:
        low, high = torch.aminmax(tensor)
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise ValueError(
                f"Image {index} is a {describe(original)} with values in [{low.item():.4g}, {high.item():.4g}]: "
                "float images must be in [0, 1] (divide 0-255 data by 255 or pass uint8)."
            )
    return tensor


def _to_channels_first(
    tensor: Tensor,
    prefer_channels_last: bool,
    index: int,
    original: Any,
    num_channels: int = 3,
    input_data_format: str | None = None,
) -> Tensor:
    """`(C, H, W)` view of a `(H, W)`, `(H, W, C)` or `(C, H, W)` tensor; `input_data_format` ("channels_first",
    "channels_last", "none" for 2-D) decides, otherwise ambiguous shapes follow the library."""
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3 and input_data_format is not None:
        return tensor.permute(2, 0, 1) if input_data_format == "channels_last" else tensor
    if tensor.ndim == 3:
        counts = (1, 3, 4, num_channels)
        first_ok, last_ok = tensor.shape[0] in counts, tensor.shape[-1] in counts
        if last_ok and (prefer_channels_last or not first_ok):
            return tensor.permute(2, 0, 1)  # (H, W, C) -> (C, H, W), a view
        if first_ok:
            return tensor
    raise ValueError(f"Image {index} is a {describe(original)}. Accepted: {ACCEPTED_IMAGES}.")


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
        raise TypeError(f"Image {index} is a {describe(array)}. Accepted: {ACCEPTED_IMAGES}.") from None


def image_to_tensor(
    image: ImageInput,
    index: int = 0,
    num_channels: int = 3,
    input_data_format: str | None = None,
    do_convert_rgb: bool | None = None,
) -> Tensor:
    """Converts one input image to a `(num_channels, H, W)` tensor: uint8 for 8-bit inputs, float32 in [0, 1]
    otherwise.

    For 3 channels, grayscale is repeated to 3 channels and alpha is dropped (`do_convert_rgb=True` composites it
    onto white instead, as transformers' `convert_to_rgb`); other channel counts (e.g. 4 with a 4-value
    `image_mean`) are taken as they are. 16-bit data is scaled by 1/65535. Arrays and PIL images are read as
    `(H, W, C)` when the shape allows it, tensors as `(C, H, W)`, unless `input_data_format` says. The result may be
    a view of the input with channels-last strides (resizing those is faster); it is never written to.

    Raises:
        TypeError: unsupported type or integer dtype. ValueError: unsupported shape or channel count, float values
        outside [0, 1].
    """
    input_data_format = _channel_format(input_data_format)
    if do_convert_rgb and num_channels == 3:
        image = _composite_onto_white(image, index, input_data_format)
        input_data_format = "channels_last" if isinstance(image, np.ndarray) and image.ndim == 3 else input_data_format
    if isinstance(image, PIL.Image.Image):
        tensor, prefer_channels_last = _array_to_tensor(_pil_to_array(image), index), True
    elif isinstance(image, np.ndarray):
        tensor, prefer_channels_last = _array_to_tensor(image, index), True
    elif isinstance(image, Tensor):
        tensor, prefer_channels_last = image.detach(), False
    else:
        raise TypeError(f"Image {index} is a {describe(image)}. Accepted: {ACCEPTED_IMAGES}.")
    tensor = _to_channels_first(tensor, prefer_channels_last, index, image, num_channels, input_data_format)
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"Image {index} is empty: {describe(image)}.")
    tensor = _to_supported_dtype(tensor, index, image)
    if num_channels != 3:
        if tensor.shape[0] != num_channels:
            raise ValueError(
                f"Image {index} has {tensor.shape[0]} channels ({describe(image)}) but image_mean/image_std have "
                f"{num_channels} values; pass one mean and std per channel."
            )
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
    if tensor.shape[0] not in (3, 4):
        raise ValueError(
            f"Image {index} has {tensor.shape[0]} channels ({describe(image)}); pass image_mean and image_std with "
            f"{tensor.shape[0]} values each to process it, or an image with 1, 3 or 4 channels."
        )
    return tensor[:3]


def to_8bit_pil(image: PIL.Image.Image) -> PIL.Image.Image:
    """A high-bit-depth PIL image (modes "I;16*", "I", "F") as 8-bit "L" with its full range kept; others unchanged.

    The one rule for high-bit-depth images, shared with `image_to_tensor`: 16-bit values are divided by 65535 and
    float values must already be in [0, 1]; here the result is then rounded to the nearest of 256 levels (so the
    processor sees it within 0.5/255 of the same image passed directly). PIL's own `convert("RGB")` clips 16-bit
    values at 255 instead, which turns almost every 16-bit photo white. Used by every reader of image files
    (training, evaluation, prediction), whose augmentation works on 8-bit PIL images.

    Raises:
        ValueError: mode "I" values outside [0, 65535], or mode "F" values outside [0, 1].
    """
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    unit = image_to_tensor(image)[0]  # (H, W) float32 in [0, 1], by the rule above
    return PIL.Image.fromarray((unit * 255).round().to(torch.uint8).numpy(), mode="L")


_CHANNEL_FORMATS = {"channels_first": "channels_first", "first": "channels_first", "channels_last": "channels_last"}
_CHANNEL_FORMATS["last"] = "channels_last"


def _channel_format(value: Any) -> str | None:
    """`input_data_format` as "channels_first"/"channels_last" (or None); accepts transformers' `ChannelDimension`."""
    if value is None:
        return None
    name = str(getattr(value, "value", value))
    if name not in _CHANNEL_FORMATS:
        raise ValueError(f"input_data_format must be 'channels_first', 'channels_last' or None; got {value!r}.")
    return _CHANNEL_FORMATS[name]


def _composite_onto_white(image: ImageInput, index: int, input_data_format: str | None) -> ImageInput:
    """transformers' `convert_to_rgb`: transparency composited onto white, grayscale to RGB; `(H, W, 3)` arrays for
    PIL and numpy inputs. Tensors with 4 channels are composited the same way; others pass through."""
    from transformers.image_transforms import convert_to_rgb

    if isinstance(image, PIL.Image.Image):
        return convert_to_rgb(image, return_numpy=True)
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return convert_to_rgb(image, return_numpy=True, input_data_format=input_data_format)
    if isinstance(image, Tensor) and image.ndim == 3:
        channels_last = input_data_format == "channels_last"
        if (image.shape[-1] if channels_last else image.shape[0]) == 4:
            rgba = image.permute(2, 0, 1) if channels_last else image
            maximum = 255.0 if rgba.dtype == torch.uint8 else 1.0
            color, alpha = rgba[:3].float(), rgba[3:].float() / maximum
            composite = color * alpha + maximum * (1 - alpha)
            composite = composite.round().to(torch.uint8) if rgba.dtype == torch.uint8 else composite
            return composite.permute(1, 2, 0) if channels_last else composite
    return image


def make_list_of_images(images: Any) -> list[Any]:
    """One image, a list/tuple of images, or a 4-D array/tensor (a batch) -> a non-empty list of images."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"`images` is an empty {type(images).__name__}. Accepted: {ACCEPTED_IMAGES}.")
        return list(images)
    if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError(f"`images` is an empty batch: {describe(images)}.")
        return list(images)
    return [images]
