"""Small configurations and random inputs shared by the tests and the benchmarks (as `transformers.testing_utils`).

Nothing here touches the network or the disk.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig

__all__ = [
    "TINY_CONFIG",
    "TINY_FROM_SCRATCH_CONFIG",
    "TINY_SEGMENTATION_CONFIG",
    "TINY_TRAINING_CONFIG",
    "make_labels",
    "make_masks",
    "make_pixel_inputs",
    "make_tiny_config",
    "randomize_weights_",
    "transformer_fields",
]

# A DETR small enough for CPU unit tests: resnet18, d_model 32, 2+2 layers, 2 heads, FFN 64, 8 queries, 3 labels.
TINY_CONFIG: dict[str, Any] = {
    "backbone": "resnet18",
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "num_queries": 8,
    "num_labels": 3,
}

# The same with one encoder layer: the model the end-to-end training tests write as `--model tiny.json`.
TINY_TRAINING_CONFIG: dict[str, Any] = {**TINY_CONFIG, "encoder_layers": 1}

# The same trained from scratch as `scripts/train.py` trains small models: trainable BatchNorm in every stage.
TINY_FROM_SCRATCH_CONFIG: dict[str, Any] = {
    **TINY_TRAINING_CONFIG,
    "freeze_backbone_batch_norm": False,
    "backbone_trainable_layers": 5,
}

# The segmentation head's GroupNorm needs d_model + heads to be a multiple of 8: 8 heads of 4 channels.
TINY_SEGMENTATION_CONFIG: dict[str, Any] = {**TINY_CONFIG, "encoder_attention_heads": 8, "decoder_attention_heads": 8}

_TRANSFORMER_FIELDS = (
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "num_queries",
)


def transformer_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The encoder/decoder shape fields of a config dict (e.g. of a training preset), without backbone or options."""
    return {name: config[name] for name in _TRANSFORMER_FIELDS if name in config}


def make_tiny_config(**overrides: Any) -> DetrCustomConfig:
    """`TINY_CONFIG` with `overrides` as a `DetrCustomConfig`."""
    return DetrCustomConfig(**{**TINY_CONFIG, **overrides})


def make_pixel_inputs(batch_size: int = 2, height: int = 64, width: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images with mixed valid regions: image 0 unpadded, the others padded bottom/right."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, height, width, generator=generator)
    pixel_mask = torch.zeros(batch_size, height, width, dtype=torch.int64)
    pixel_mask[0] = 1
    for index in range(1, batch_size):
        valid_height = height // 2 + (index * 7) % (height // 2)
        valid_width = width // 3 + (index * 13) % (width // 2)
        pixel_mask[index, :valid_height, :valid_width] = 1
        pixel_values[index, :, valid_height:, :] = 0
        pixel_values[index, :, :, valid_width:] = 0
    return {"pixel_values": pixel_values, "pixel_mask": pixel_mask}


def make_labels(
    num_boxes: tuple[int, ...] | list[int] = (3, 0), num_labels: int = 3, seed: int = 0, min_size: float = 0.1
) -> list[dict[str, torch.Tensor]]:
    """Random labels: `num_boxes[i]` normalised (cx, cy, w, h) boxes inside image `i`, sides in
    `[min_size, min_size + 0.4)`."""
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for count in num_boxes:
        size = min_size + 0.4 * torch.rand(count, 2, generator=generator)
        center = size / 2 + (1 - size) * torch.rand(count, 2, generator=generator)
        labels.append(
            {
                "class_labels": torch.randint(0, num_labels, (count,), generator=generator),
                "boxes": torch.cat([center, size], dim=1),
            }
        )
    return labels


def make_masks(labels: list[dict[str, torch.Tensor]], sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """`labels` with `masks` `(n, height_i, width_i)` at each image's unpadded `sizes[i]`: every box filled as an
    ellipse (so that masks are not just boxes)."""
    with_masks = []
    for target, (height, width) in zip(labels, sizes):
        rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        columns = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        center_x, center_y, box_width, box_height = (value[:, None, None] for value in target["boxes"].unbind(-1))
        x = (columns[None, None, :] - center_x) / (box_width / 2)
        y = (rows[None, :, None] - center_y) / (box_height / 2)
        with_masks.append({**target, "masks": (x**2 + y**2 <= 1).to(torch.uint8)})
    return with_masks


def randomize_weights_(model: nn.Module, seed: int) -> None:
    """Replaces transformers' near-degenerate init (N(0, 0.02) matrices) by weights that make every part matter:
    matrices ~ N(0, 1 / fan_in), biases ~ N(0, 0.1), norm scales and BatchNorm variances ~ U(0.5, 1.5), BatchNorm
    means ~ N(0, 0.1); activations stay in a sane range. Parameters and buffers are visited by name, so two models
    with the same names get the same values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("running_var") or (tensor.ndim == 1 and name.endswith("weight")):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.ndim == 1:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / tensor[0].numel() ** 0.5)
