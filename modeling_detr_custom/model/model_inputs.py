"""Checks and layouts of the model inputs (`pixel_values`, `inputs_embeds`, `encoder_outputs`, decoder inputs),
with messages that name the argument and the expected shape."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutput

from .tensor_cache import is_exporting

__all__ = ["as_encoder_output", "check_pixel_inputs", "key_padding_mask_of", "per_group", "square_feature_map"]


def per_group(
    tensor: Tensor | None, name: str, batch_size: int, num_queries: int, hidden_size: int | None, num_groups: int
) -> Tensor | None:
    """Checks a per-query decoder input `(B, G * Q[, D])` and lays it out as the decoder batch `(B * G, Q[, D])`."""
    if tensor is None:
        return None
    expected = (batch_size, num_queries) + (() if hidden_size is None else (hidden_size,))
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"{name} must have shape {expected} (batch_size, num_queries{', d_model' if hidden_size else ''}), "
            f"got {tuple(tensor.shape)}."
        )
    return tensor.reshape(batch_size * num_groups, num_queries // num_groups, *expected[2:])


def square_feature_map(inputs_embeds: Tensor, d_model: int) -> Tensor:
    """`(B, HW, D)` flattened features as a `(B, D, h, h)` view, taking the map to be square as transformers does."""
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != d_model:
        raise ValueError(
            f"inputs_embeds must have shape (batch_size, height * width, d_model={d_model}), "
            f"got {tuple(inputs_embeds.shape)}."
        )
    side = math.isqrt(inputs_embeds.shape[1])
    if side * side != inputs_embeds.shape[1]:
        raise ValueError(
            f"inputs_embeds has {inputs_embeds.shape[1]} positions; the feature map is taken to be square (as in "
            "transformers' DETR), so it must be a square number."
        )
    return inputs_embeds.transpose(1, 2).unflatten(2, (side, side))


def as_encoder_output(encoder_outputs: Any) -> BaseModelOutput:
    """A tuple/list whose first entry is the encoder output, as a `BaseModelOutput` (only that entry is kept:
    which optional entries follow it depends on what was requested)."""
    if not isinstance(encoder_outputs, (tuple, list)) or not isinstance(encoder_outputs[0], Tensor):
        raise ValueError(
            "encoder_outputs must be a BaseModelOutput or a tuple whose first entry is the encoder output "
            f"(batch_size, height * width, d_model), got {type(encoder_outputs).__name__}."
        )
    return BaseModelOutput(last_hidden_state=encoder_outputs[0])


def check_pixel_inputs(pixel_values: Tensor, pixel_mask: Tensor | None, num_channels: int, dtype: torch.dtype) -> None:
    if not isinstance(pixel_values, Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else type(pixel_values).__name__
        raise ValueError(f"pixel_values must have shape (batch_size, {num_channels}, height, width), got {shape}.")
    if not pixel_values.is_floating_point():  # integer images were never rescaled and normalised
        raise TypeError(
            f"pixel_values has dtype {pixel_values.dtype}; the model takes float images rescaled and normalised by "
            "the image processor (DetrCustomImageProcessor)."
        )
    if pixel_values.dtype != dtype and not torch.is_autocast_enabled(pixel_values.device.type):
        # Not cast silently: a float64 batch would otherwise fail inside the first convolution.
        raise TypeError(
            f"pixel_values has dtype {pixel_values.dtype} but the model's weights are {dtype}; cast the images with "
            f"`.to({dtype})` (or run under torch.autocast)."
        )
    if pixel_mask is not None and tuple(pixel_mask.shape) != (pixel_values.shape[0], *pixel_values.shape[2:]):
        raise ValueError(
            f"pixel_mask must have shape (batch_size, height, width) = "
            f"{(pixel_values.shape[0], *pixel_values.shape[2:])}, got {tuple(pixel_mask.shape)}."
        )


def key_padding_mask_of(mask: Tensor | None) -> Tensor | None:
    """Flattens the feature-level mask to `(batch_size, height * width)`; None when nothing is padded.

    Dropping an all-ones mask lets SDPA use its fastest kernels; an image without any valid feature would make
    its attention undefined, so it is reported instead. Both look at the mask's values, which an exported or
    traced graph cannot branch on: there the mask is always kept (an all-ones mask gives the same numbers).
    """
    if mask is None:
        return None
    flat = mask.flatten(1)  # (B, HW)
    if is_exporting():
        return flat
    valid_counts = flat.sum(1).tolist()  # one device-to-host copy
    if min(valid_counts) == 0:
        empty = [index for index, count in enumerate(valid_counts) if count == 0]
        raise ValueError(f"pixel_mask of images {empty} marks no pixel as valid (1 = real pixel, 0 = padding).")
    return None if min(valid_counts) == flat.shape[1] else flat
