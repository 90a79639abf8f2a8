"""DETR encoder-decoder transformer: post-norm (optional pre-norm) layers, positions on queries and keys only.

Module names follow transformers' DETR checkpoints (`self_attn.{q,k,v,out}_proj`, `fc1`, `fc2`,
`self_attn_layer_norm`, `encoder_attn`, `encoder_attn_layer_norm`, `final_layer_norm`, `decoder.layernorm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_detr_custom import DetrCustomConfig
from .tensor_cache import derived_tensor_cache_key

__all__ = [
    "XavierLinear",
    "DetrCustomAttention",
    "DetrCustomDecoder",
    "DetrCustomDecoderLayer",
    "DetrCustomDecoderOutput",
    "DetrCustomEncoder",
    "DetrCustomEncoderLayer",
    "DetrCustomEncoderOutput",
]


class XavierLinear(nn.Linear):
    """`nn.Linear` of the encoder/decoder, initialised as the original DETR transformer (xavier-uniform weight).

    Args:
        in_features: Input features.
        out_features: Output features.
        xavier_fan_out: Fan-out of the xavier bound. The q/k/v projections pass `3 * d_model`: the original
            initialises them as one stacked `in_proj_weight` of shape `(3 * d_model, d_model)`.
        zero_bias: Start with a zero bias (attention projections, as `nn.MultiheadAttention`); otherwise keep
            PyTorch's default bias initialisation (the FFN).
    """

    def __init__(
        self, in_features: int, out_features: int, xavier_fan_out: int | None = None, zero_bias: bool = False
    ) -> None:
        self.xavier_fan_out = xavier_fan_out or out_features
        self.zero_bias = zero_bias
        super().__init__(in_features, out_features)

    @property
    def xavier_bound(self) -> float:
        """Half-width of the xavier-uniform distribution (gain 1)."""
        return math.sqrt(6.0 / (self.in_features + self.xavier_fan_out))

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.xavier_bound, self.xavier_bound)
        if self.zero_bias:
            nn.init.zeros_(self.bias)
        else:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)


class DetrCustomAttention(nn.Module):
    """Multi-head attention through `scaled_dot_product_attention`, with separate q/k/v/out projections.

    Callers add position embeddings to `queries` and `keys` themselves; `values` never get them. When `queries`
    and `keys` are the same tensor (self-attention: both are `hidden_states + positions`), both projections run as
    one matrix product with the two weights stacked at run time (cached while the weights are unchanged and need no
    gradient); the parameters stay `q_proj`/`k_proj`, and the results equal two separate products. Setting
    `stack_query_key = False` runs the two products separately (for measurements).

    Args:
        hidden_size: Model width `d_model`.
        num_heads: Number of heads; divides `hidden_size`.
        dropout: Dropout on the attention weights (training only).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}.")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        stacked = 3 * hidden_size
        self.q_proj = XavierLinear(hidden_size, hidden_size, xavier_fan_out=stacked, zero_bias=True)
        self.k_proj = XavierLinear(hidden_size, hidden_size, xavier_fan_out=stacked, zero_bias=True)
        self.v_proj = XavierLinear(hidden_size, hidden_size, xavier_fan_out=stacked, zero_bias=True)
        self.out_proj = XavierLinear(hidden_size, hidden_size, zero_bias=True)
        # Run-time stacked q/k projection: (cache key, weight (2D, D), bias (2D,)); never part of the state dict.
        self.stack_query_key = True
        self._stacked_query_key: tuple[Any, Tensor, Tensor] | None = None

    def _stacked_query_key_projection(self) -> tuple[Tensor, Tensor]:
        """`q_proj` and `k_proj` as one projection: weight `(2 * hidden_size, hidden_size)` and bias."""
        sources = [self.q_proj.weight, self.k_proj.weight, self.q_proj.bias, self.k_proj.bias]
        key = derived_tensor_cache_key(sources)
        if key is None:
            return torch.cat(sources[:2]), torch.cat(sources[2:])
        if self._stacked_query_key is None or self._stacked_query_key[0] != key:
            with torch.no_grad():
                self._stacked_query_key = (key, torch.cat(sources[:2]), torch.cat(sources[2:]))
        return self._stacked_query_key[1], self._stacked_query_key[2]

    def _apply(self, *args: Any, **kwargs: Any) -> DetrCustomAttention:
        # `.to()`, `.half()`, ...: drop the stacked copy now rather than holding it until the next call.
        self._stacked_query_key = None
        return super()._apply(*args, **kwargs)

    def _project_queries_and_keys(self, queries: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        if queries is not keys or not self.stack_query_key:
            return self.q_proj(queries), self.k_proj(keys)
        weight, bias = self._stacked_query_key_projection()
        query, key = nn.functional.linear(queries, weight, bias).chunk(2, dim=-1)  # 2 x (B, L, D)
        return query, key

    def _split_heads(self, states: Tensor) -> Tensor:
        # No sizes read into Python: traced and exported graphs keep batch and length dynamic.
        return states.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, nH, L, hd)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        key_padding_mask: Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attends from `queries` to `keys`/`values`.

        Args:
            queries: `(batch_size, query_length, hidden_size)`.
            keys: `(batch_size, key_length, hidden_size)`.
            values: `(batch_size, key_length, hidden_size)`.
            key_padding_mask: `(batch_size, key_length)` bool, True on keys that may be attended; None = all.
            output_attentions: Also return the attention weights (computed explicitly, without SDPA).

        Returns:
            Output `(batch_size, query_length, hidden_size)` and weights
            `(batch_size, num_heads, query_length, key_length)` or None.
        """
        query, key = self._project_queries_and_keys(queries, keys)
        query, key, value = self._split_heads(query), self._split_heads(key), self._split_heads(self.v_proj(values))
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = torch.matmul(query, key.transpose(-2, -1)) * self.head_dim**-0.5  # (B, nH, L, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            output = torch.matmul(nn.functional.dropout(weights, dropout, self.training), value)
        else:
            output = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
        output = output.transpose(1, 2).flatten(2)  # (B, L, D)
        return self.out_proj(output), weights


class _ResidualLayer(GradientCheckpointingLayer):
    """Shared residual wiring: post-norm `norm(x + dropout(f(x)))` or pre-norm `x + dropout(f(norm(x)))`."""

    def __init__(
        self, hidden_size: int, ffn_dim: int, dropout: float, activation: str, activation_dropout: float, pre_norm: bool
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.dropout = dropout
        self.activation_fn = ACT2FN[activation]
        self.activation_dropout = activation_dropout
        self.fc1 = XavierLinear(hidden_size, ffn_dim)
        self.fc2 = XavierLinear(ffn_dim, hidden_size)
        self.final_layer_norm = nn.LayerNorm(hidden_size)

    def _block_input(self, hidden_states: Tensor, norm: nn.LayerNorm) -> Tensor:
        return norm(hidden_states) if self.pre_norm else hidden_states

    def _add_residual(self, residual: Tensor, update: Tensor, norm: nn.LayerNorm) -> Tensor:
        hidden_states = residual + nn.functional.dropout(update, self.dropout, self.training)
        return hidden_states if self.pre_norm else norm(hidden_states)

    def _feed_forward(self, hidden_states: Tensor) -> Tensor:
        normed = self._block_input(hidden_states, self.final_layer_norm)
        update = self.activation_fn(self.fc1(normed))
        update = self.fc2(nn.functional.dropout(update, self.activation_dropout, self.training))
        return self._add_residual(hidden_states, update, self.final_layer_norm)


class DetrCustomEncoderLayer(_ResidualLayer):
    """Self-attention over the flattened feature map, then the FFN.

    Args:
        hidden_size: `d_model`.
        num_heads: Attention heads.
        ffn_dim: Hidden width of the FFN.
        dropout: Dropout on the residual branches.
        attention_dropout: Dropout on attention weights.
        activation: Name of the FFN activation (transformers' `ACT2FN`).
        activation_dropout: Dropout after the FFN activation.
        pre_norm: LayerNorm before each block instead of after.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation: str = "relu",
        activation_dropout: float = 0.1,
        pre_norm: bool = False,
    ) -> None:
        super().__init__(hidden_size, ffn_dim, dropout, activation, activation_dropout, pre_norm)
        self.self_attn = DetrCustomAttention(hidden_size, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden_size)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: Tensor,
        key_padding_mask: Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """One encoder layer.

        Args:
            hidden_states: `(batch_size, height * width, hidden_size)`.
            position_embeddings: Same shape; added to queries and keys.
            key_padding_mask: `(batch_size, height * width)` bool, True on real pixels; None = no padding.
            output_attentions: Also return the self-attention weights.

        Returns:
            Updated hidden states and the attention weights (or None).
        """
        normed = self._block_input(hidden_states, self.self_attn_layer_norm)
        query_key = normed + position_embeddings
        update, weights = self.self_attn(query_key, query_key, normed, key_padding_mask, output_attentions)
        hidden_states = self._add_residual(hidden_states, update, self.self_attn_layer_norm)
        return self._feed_forward(hidden_states), weights


class DetrCustomDecoderLayer(_ResidualLayer):
    """Self-attention between object queries, cross-attention to the encoder output, then the FFN.

    Args: as [`DetrCustomEncoderLayer`].
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation: str = "relu",
        activation_dropout: float = 0.1,
        pre_norm: bool = False,
    ) -> None:
        super().__init__(hidden_size, ffn_dim, dropout, activation, activation_dropout, pre_norm)
        self.self_attn = DetrCustomAttention(hidden_size, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden_size)
        self.encoder_attn = DetrCustomAttention(hidden_size, num_heads, attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(hidden_size)

    def forward(
        self,
        hidden_states: Tensor,
        query_position_embeddings: Tensor,
        encoder_hidden_states: Tensor,
        encoder_keys: Tensor,
        encoder_key_padding_mask: Tensor | None = None,
        output_attentions: bool = False,
        query_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One decoder layer.

        Args:
            hidden_states: `(batch_size, num_queries, hidden_size)`.
            query_position_embeddings: Same shape; added to queries (and keys of the self-attention).
            encoder_hidden_states: `(batch_size, height * width, hidden_size)`, the cross-attention values.
            encoder_keys: Encoder output plus its position embeddings, the cross-attention keys.
            encoder_key_padding_mask: `(batch_size, height * width)` bool, True on real pixels; None = all.
            output_attentions: Also return self- and cross-attention weights.
            query_padding_mask: `(batch_size, num_queries)` bool, True on queries the self-attention may attend
                to (transformers' `decoder_attention_mask`); None = all.

        Returns:
            Updated hidden states, self-attention weights and cross-attention weights (None unless requested).
        """
        normed = self._block_input(hidden_states, self.self_attn_layer_norm)
        query_key = normed + query_position_embeddings
        update, self_weights = self.self_attn(query_key, query_key, normed, query_padding_mask, output_attentions)
        hidden_states = self._add_residual(hidden_states, update, self.self_attn_layer_norm)

        normed = self._block_input(hidden_states, self.encoder_attn_layer_norm)
        update, cross_weights = self.encoder_attn(
            normed + query_position_embeddings,
            encoder_keys,
            encoder_hidden_states,
            encoder_key_padding_mask,
            output_attentions,
        )
        hidden_states = self._add_residual(hidden_states, update, self.encoder_attn_layer_norm)
        return self._feed_forward(hidden_states), self_weights, cross_weights


@dataclass
class DetrCustomEncoderOutput:
    """Encoder results: final states `(B, HW, D)`, and per-layer states/attentions when requested."""

    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class DetrCustomDecoderOutput:
    """Decoder results.

    `last_hidden_state` `(B, Q, D)` has gone through the final LayerNorm; `intermediate_hidden_states`
    `(num_layers, B, Q, D)` holds every layer's output through that same LayerNorm (its last entry equals
    `last_hidden_state`); `hidden_states` holds the raw layer inputs/outputs when requested.
    """

    last_hidden_state: Tensor
    intermediate_hidden_states: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


def _layer_kwargs(config: DetrCustomConfig) -> dict[str, Any]:
    return {
        "hidden_size": config.d_model,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation": config.activation_function,
        "activation_dropout": config.activation_dropout,
        "pre_norm": config.pre_norm,
    }


class DetrCustomEncoder(nn.Module):
    """Stack of encoder layers; in pre-norm mode a final LayerNorm (`layernorm`), as the original.

    Args:
        config: A `DetrCustomConfig` (d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim, dropouts,
            activation_function, pre_norm).
    """

    def __init__(self, config: DetrCustomConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DetrCustomEncoderLayer(
                num_heads=config.encoder_attention_heads, ffn_dim=config.encoder_ffn_dim, **_layer_kwargs(config)
            )
            for _ in range(config.encoder_layers)
        )
        self.layernorm = nn.LayerNorm(config.d_model) if config.pre_norm else None

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: Tensor,
        key_padding_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> DetrCustomEncoderOutput:
        """Encodes the flattened feature map `(batch_size, height * width, d_model)`; see the layer for args."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, position_embeddings, key_padding_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        if self.layernorm is not None:
            hidden_states = self.layernorm(hidden_states)
            if output_hidden_states:  # the last entry is the encoder output, as in transformers
                all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return DetrCustomEncoderOutput(hidden_states, all_hidden_states, all_attentions)


class DetrCustomDecoder(nn.Module):
    """Stack of decoder layers followed by the shared final LayerNorm (`layernorm`).

    Args:
        config: A `DetrCustomConfig` (d_model, decoder_layers, decoder_attention_heads, decoder_ffn_dim, dropouts,
            activation_function, pre_norm).
    """

    def __init__(self, config: DetrCustomConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DetrCustomDecoderLayer(
                num_heads=config.decoder_attention_heads, ffn_dim=config.decoder_ffn_dim, **_layer_kwargs(config)
            )
            for _ in range(config.decoder_layers)
        )
        self.layernorm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        query_position_embeddings: Tensor,
        encoder_hidden_states: Tensor,
        spatial_position_embeddings: Tensor,
        encoder_key_padding_mask: Tensor | None = None,
        output_intermediate: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        initial_hidden_states: Tensor | None = None,
        query_padding_mask: Tensor | None = None,
    ) -> DetrCustomDecoderOutput:
        """Decodes object queries.

        Args:
            query_position_embeddings: `(batch_size, num_queries, d_model)` learned query embeddings.
            encoder_hidden_states: `(batch_size, height * width, d_model)`.
            spatial_position_embeddings: Same shape, added to the cross-attention keys.
            encoder_key_padding_mask: `(batch_size, height * width)` bool, True on real pixels; None = all.
            output_intermediate: Also return every layer's output through the final LayerNorm (auxiliary loss).
            output_attentions: Also return self- and cross-attention weights.
            output_hidden_states: Also return the raw input and output of every layer.
            initial_hidden_states: `(batch_size, num_queries, d_model)` decoder input (transformers'
                `decoder_inputs_embeds`); None = zeros, as the original.
            query_padding_mask: `(batch_size, num_queries)` bool, True on queries the self-attention may attend
                to; None = all.

        Returns:
            A `DetrCustomDecoderOutput`.
        """
        # The decoder input starts at zero: the queries only differ through their position embeddings.
        hidden_states = (
            torch.zeros_like(query_position_embeddings) if initial_hidden_states is None else initial_hidden_states
        )
        encoder_keys = encoder_hidden_states + spatial_position_embeddings  # the same for every layer
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        intermediate = []
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                query_position_embeddings,
                encoder_hidden_states,
                encoder_keys,
                encoder_key_padding_mask,
                output_attentions,
                query_padding_mask=query_padding_mask,
            )
            if output_intermediate:
                intermediate.append(self.layernorm(hidden_states))
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
        # The final output is the last layer through the same LayerNorm, whether or not intermediates are kept.
        last_hidden_state = intermediate[-1] if output_intermediate else self.layernorm(hidden_states)
        if output_hidden_states:  # the last entry is the decoder output (after the LayerNorm), as in transformers
            all_hidden_states = all_hidden_states[:-1] + (last_hidden_state,)
        stacked = torch.stack(intermediate) if output_intermediate else None  # (L, B, Q, D)
        return DetrCustomDecoderOutput(last_hidden_state, stacked, all_hidden_states, self_attentions, cross_attentions)
