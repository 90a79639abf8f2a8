"""Shared fixtures: a tiny DETR config factory, padded inputs and labels. Nothing here touches the network."""

import os

# Before transformers/huggingface_hub are imported: tests must never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from modeling_detr_custom import DetrCustomConfig  # noqa: E402

# Test tensors are tiny: a second intra-op thread only adds synchronisation, which costs 10-30x when the cores are
# shared with other processes.
torch.set_num_threads(1)

TINY_CONFIG = {
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


def make_tiny_config(**overrides: object) -> DetrCustomConfig:
    """A DETR small enough for CPU tests: resnet18, d_model 32, 2+2 layers, 2 heads, FFN 64, 8 queries, 3 labels."""
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
    num_boxes: tuple[int, ...] = (3, 0), num_labels: int = 3, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Random labels: `num_boxes[i]` normalised (cx, cy, w, h) boxes inside image `i` (0 is valid)."""
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for count in num_boxes:
        size = 0.1 + 0.4 * torch.rand(count, 2, generator=generator)
        center = size / 2 + (1 - size) * torch.rand(count, 2, generator=generator)
        labels.append(
            {
                "class_labels": torch.randint(0, num_labels, (count,), generator=generator),
                "boxes": torch.cat([center, size], dim=1),
            }
        )
    return labels


@pytest.fixture
def tiny_config() -> Callable[..., DetrCustomConfig]:
    """Factory: `tiny_config(**overrides)` -> `DetrCustomConfig` (see `make_tiny_config`)."""
    return make_tiny_config


@pytest.fixture
def pixel_inputs() -> dict[str, torch.Tensor]:
    """`pixel_values` (2, 3, 64, 96) and `pixel_mask` (2, 64, 96): image 0 unpadded, image 1 padded."""
    return make_pixel_inputs()


@pytest.fixture
def detection_labels() -> list[dict[str, torch.Tensor]]:
    """Labels for `pixel_inputs`: three boxes on image 0, none on image 1."""
    return make_labels()
