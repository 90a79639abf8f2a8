"""The segmentation head of the original DETR (`MHAttentionMap` + `MaskHeadSmallConv`).

`DetrCustomMHAttentionMap` gives, for every query, one attention map per head over the encoder memory; the
`DetrCustomMaskHeadSmallConv` turns the memory (repeated per query) and those maps into one mask logit map per
query, upsampling FPN-style over the backbone's stages 3, 2 and 1 to stride 4. Parameter names are the original's
(`q_linear`, `k_linear`, `lay1`..`lay5`, `gn1`..`gn5`, `adapter1`..`adapter3`, `out_lay`), which is also the Hub
format transformers 5.x writes for `DetrForSegmentation` (it renames its `q_proj`, `conv1.conv`, `fpn_stages.N`
modules on saving), so those checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DetrCustomMHAttentionMap", "DetrCustomMaskHeadSmallConv"]

# GroupNorm groups of the original. transformers takes min(8, channels) so that small models (d_model < 128, where
# d_model / 16 < 8) can be built, and both refuse widths that 8 (or min(8, channels)) does not divide, such as
# d_model + heads = 132 of a width-128 model with 4 heads. Here such a width gets the largest divisor of 8 that
# divides it; wherever the original or transformers can build the head, the groups are theirs.
_MAX_GROUPS = 8


class DetrCustomMaskHeadSmallConv(nn.Module):
    """The original's `MaskHeadSmallConv`: per-query mask logits at the resolution of the first FPN stage.

    Five 3x3 convolutions (`lay1`..`lay5`), each followed by GroupNorm (`gn1`..`gn5`) and ReLU, of widths
    `input_channels`, then `hidden_size / 2, / 4, / 8, / 16`; before `lay3`, `lay4` and `lay5` the running
    features are upsampled (nearest) to the next backbone stage and added to its 1x1 adapter (`adapter1`..
    `adapter3`); `out_lay` gives one logit per pixel.

    Args:
        input_channels: `d_model + num_heads` (the memory concatenated with one attention map per head).
        fpn_channels: Channels of the three backbone stages used for upsampling, coarsest first (stages 3, 2, 1).
        hidden_size: `d_model`; at least 16.

    Raises:
        ValueError: `hidden_size` is below 16, or not three stages.
    """

    def __init__(self, input_channels: int, fpn_channels: list[int], hidden_size: int) -> None:
        super().__init__()
        if hidden_size < 16 or len(fpn_channels) != 3:
            raise ValueError(
                f"The mask head needs d_model >= 16 and three FPN stages, got {hidden_size} and {len(fpn_channels)}."
            )
        widths = [input_channels, hidden_size // 2, hidden_size // 4, hidden_size // 8, hidden_size // 16]
        self.lay1 = nn.Conv2d(input_channels, widths[0], 3, padding=1)
        self.gn1 = _group_norm(widths[0])
        self.lay2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.gn2 = _group_norm(widths[1])
        self.lay3 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.gn3 = _group_norm(widths[2])
        self.lay4 = nn.Conv2d(widths[2], widths[3], 3, padding=1)
        self.gn4 = _group_norm(widths[3])
        self.lay5 = nn.Conv2d(widths[3], widths[4], 3, padding=1)
        self.gn5 = _group_norm(widths[4])
        self.out_lay = nn.Conv2d(widths[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_channels[0], widths[1], 1)
        self.adapter2 = nn.Conv2d(fpn_channels[1], widths[2], 1)
        self.adapter3 = nn.Conv2d(fpn_channels[2], widths[3], 1)

    def forward(self, features: Tensor, attention_maps: Tensor, fpn_features: list[Tensor]) -> Tensor:
        """Mask logits of every query.

        Args:
            features: The projected backbone map (the encoder's input) `(batch_size, d_model, h, w)`.
            attention_maps: `(batch_size, num_queries, num_heads, h, w)` from `DetrCustomMHAttentionMap`.
            fpn_features: Backbone stages 3, 2, 1, each `(batch_size, channels, H_i, W_i)`.

        Returns:
            `(batch_size * num_queries, 1, H_1, W_1)` logits, image-major.
        """
        num_queries, num_channels = attention_maps.shape[1], features.shape[1]
        # lay1 sees the memory repeated per query next to each query's maps (the original's torch.cat). A
        # convolution is linear in its input channels, so the memory's share is computed once per image.
        per_image = nn.functional.conv2d(features, self.lay1.weight[:, :num_channels], self.lay1.bias, padding=1)
        per_query = nn.functional.conv2d(attention_maps.flatten(0, 1), self.lay1.weight[:, num_channels:], padding=1)
        hidden_states = per_query + per_image.repeat_interleave(num_queries, dim=0)  # (B*Q, D + heads, h, w)
        hidden_states = nn.functional.relu(self.gn1(hidden_states))
        hidden_states = nn.functional.relu(self.gn2(self.lay2(hidden_states)))
        stages = [(self.adapter1, self.lay3, self.gn3), (self.adapter2, self.lay4, self.gn4)]
        stages.append((self.adapter3, self.lay5, self.gn5))
        for (adapter, conv, norm), stage_features in zip(stages, fpn_features):
            # The adapter runs once per image and its output is repeated per query (the original adapts the
            # repeated stage: the same numbers at num_queries times the cost).
            adapted = adapter(stage_features).repeat_interleave(num_queries, dim=0)  # (B*Q, C, H_i, W_i)
            upsampled = nn.functional.interpolate(hidden_states, size=adapted.shape[-2:], mode="nearest")
            hidden_states = nn.functional.relu(norm(conv(adapted + upsampled)))
        return self.out_lay(hidden_states)


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = min(_MAX_GROUPS, channels)
    return nn.GroupNorm(groups if channels % groups == 0 else math.gcd(_MAX_GROUPS, channels), channels)


class DetrCustomMHAttentionMap(nn.Module):
    """Attention weights (softmax only, no values) of each query over the encoder memory, per head.

    As the original: keys come from a 1x1 convolution with the key projection's weights, the scale is
    `(hidden_size / num_heads) ** -0.5`, and the softmax runs over heads and positions jointly.

    Args:
        hidden_size: `d_model`.
        num_heads: Attention heads; divides `hidden_size`.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.q_linear = nn.Linear(hidden_size, hidden_size)
        self.k_linear = nn.Linear(hidden_size, hidden_size)

    def forward(self, queries: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention maps of every query.

        Args:
            queries: Decoder output `(batch_size, num_queries, hidden_size)`.
            memory: Encoder output as a map `(batch_size, hidden_size, h, w)`.
            mask: `(batch_size, h, w)` bool, True on real positions; None = no padding. Padded positions get zero
                weight.

        Returns:
            `(batch_size, num_queries, num_heads, h, w)`, summing to 1 over heads and positions per query.
        """
        batch_size, num_queries, _ = queries.shape
        height, width = memory.shape[-2:]
        query = self.q_linear(queries).view(batch_size, num_queries, self.num_heads, self.head_dim)  # (B, Q, N, c)
        key_weight = self.k_linear.weight[:, :, None, None]
        key = nn.functional.conv2d(memory, key_weight, self.k_linear.bias)  # (B, D, h, w)
        key = key.view(batch_size, self.num_heads, self.head_dim, height, width)  # (B, N, c, h, w)
        weights = torch.einsum("bqnc,bnchw->bqnhw", query * self.scaling, key)  # (B, Q, N, h, w)
        if mask is not None:
            weights = weights.masked_fill(~mask[:, None, None], float("-inf"))
        return weights.flatten(2).softmax(-1).view_as(weights)
