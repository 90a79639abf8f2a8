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
        raise TypeError(f"Image {index} is a {describe(image)}. Accepted: {ACCEPTED_IMAGES}.")
    tensor = _to_channels_first(tensor, prefer_channels_last, index, image)
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"Image {index} is empty: {describe(image)}.")
    tensor = _to_supported_dtype(tensor, index, image)
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
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
