"""2D position embeddings of the feature map: sine (normalised over the valid region) and learned."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .tensor_cache import is_exporting

__all__ = [
    "UniformEmbedding",
    "DetrCustomLearnedPositionEmbedding",
    "DetrCustomSinePositionEmbedding",
    "build_position_embedding",
]


class DetrCustomSinePositionEmbedding(nn.Module):
    """The original DETR sine embedding: sin/cos of the row and column coordinates, computed from the mask.

    Coordinates are cumulative counts of valid pixels, normalised by the count at the end of each row/column and
    scaled to `[0, scale]`, so positions are relative to the unpadded image whatever the padding.

    Args:
        num_position_features: Features per axis (`d_model / 2`); must be even.
        temperature: Base of the geometric progression of frequencies.
        scale: Value of the normalised coordinate at the last valid pixel.
    """

    def __init__(self, num_position_features: int, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        if num_position_features % 2 != 0:
            raise ValueError(f"num_position_features={num_position_features} must be even (sin/cos pairs).")
        self.num_position_features = num_position_features
        self.temperature = temperature
        self.scale = scale
        # Embedding of the last unpadded shape: (key, tensor). It depends on nothing but the shape.
        self._unpadded_cache: tuple[tuple[Any, ...], Tensor] | None = None

    def forward(self, feature_map: Tensor, mask: Tensor | None = None) -> Tensor:
        """Position embeddings of a feature map.

        Without a mask the result depends on the shape alone and is computed once per shape (the cached tensor is
        returned again, so callers must not modify it in place).

        Args:
            feature_map: `(batch_size, channels, height, width)`; only its shape, device and dtype are used.
            mask: `(batch_size, height, width)` bool, True on real pixels; None means no padding.

        Returns:
            `(batch_size, height * width, 2 * num_position_features)` in the dtype of `feature_map`.
        """
        if mask is not None or torch.compiler.is_compiling() or is_exporting():
            return self._embed(feature_map, mask)
        batch_size, _, height, width = feature_map.shape
        key = (batch_size, height, width, feature_map.device, feature_map.dtype, torch.is_inference_mode_enabled())
        if self._unpadded_cache is None or self._unpadded_cache[0] != key:
            self._unpadded_cache = (key, self._embed(feature_map, None))
        return self._unpadded_cache[1]

    def _embed(self, feature_map: Tensor, mask: Tensor | None) -> Tensor:
        """The embedding of `forward`, computed."""
        batch_size, _, height, width = feature_map.shape
        device = feature_map.device
        if mask is None:
            y_embed = torch.arange(1, height + 1, device=device, dtype=torch.float32)[None, :, None]
            x_embed = torch.arange(1, width + 1, device=device, dtype=torch.float32)[None, None, :]
            y_embed, x_embed = y_embed.expand(batch_size, height, width), x_embed.expand(batch_size, height, width)
        else:
            y_embed = mask.cumsum(1, dtype=torch.float32)  # (B, H, W)
            x_embed = mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_position_features, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_position_features)
        pos_x = x_embed[..., None] / dim_t  # (B, H, W, F)
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        position = torch.cat((pos_y, pos_x), dim=3)  # (B, H, W, 2F)
        return position.flatten(1, 2).to(feature_map.dtype)  # (B, HW, 2F)


class UniformEmbedding(nn.Embedding):
    """`nn.Embedding` initialised uniformly in `[0, 1)`, as the original's learned position tables."""

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight)


class DetrCustomLearnedPositionEmbedding(nn.Module):
    """Learned absolute embeddings for up to 50 rows and 50 columns (as the original and transformers).

    Args:
        num_position_features: Features per axis (`d_model / 2`).
        max_positions: Largest feature-map height and width supported.
    """

    def __init__(self, num_position_features: int, max_positions: int = 50) -> None:
        super().__init__()
        self.row_embeddings = UniformEmbedding(max_positions, num_position_features)
        self.column_embeddings = UniformEmbedding(max_positions, num_position_features)

    def forward(self, feature_map: Tensor, mask: Tensor | None = None) -> Tensor:
        """Position embeddings of a feature map (the mask is not used: positions are absolute).

        Args:
            feature_map: `(batch_size, channels, height, width)`.
            mask: Ignored; accepted for the same signature as the sine embedding.

        Returns:
            `(batch_size, height * width, 2 * num_position_features)`.
        """
        batch_size, _, height, width = feature_map.shape
        max_positions = self.row_embeddings.num_embeddings
        if height > max_positions or width > max_positions:
            raise ValueError(
                f"Learned position embeddings cover feature maps up to {max_positions}x{max_positions}, got "
                f"{height}x{width}; use smaller images or position_embedding_type='sine'."
            )
        device = feature_map.device
        x_emb = self.column_embeddings(torch.arange(width, device=device))  # (W, F)
        y_emb = self.row_embeddings(torch.arange(height, device=device))  # (H, F)
        # Column embedding first, then row: the order of the original and of transformers' checkpoints.
        position = torch.cat(
            (x_emb[None, :, :].expand(height, -1, -1), y_emb[:, None, :].expand(-1, width, -1)), dim=-1
        )  # (H, W, 2F)
        return position.flatten(0, 1)[None].expand(batch_size, -1, -1).to(feature_map.dtype)  # (B, HW, 2F)


def build_position_embedding(position_embedding_type: str, d_model: int) -> nn.Module:
    """The position embedding module named by `position_embedding_type` ("sine" or "learned")."""
    if position_embedding_type == "sine":
        return DetrCustomSinePositionEmbedding(d_model // 2)
    if position_embedding_type == "learned":
        return DetrCustomLearnedPositionEmbedding(d_model // 2)
    raise ValueError(f"position_embedding_type={position_embedding_type!r} is unknown; use 'sine' or 'learned'.")
