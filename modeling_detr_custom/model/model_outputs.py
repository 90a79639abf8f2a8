"""Output dataclasses of the DETR models: transformers' DETR outputs, field for field and in their order (the
segmentation output adds one optional field after them, `processed_sizes`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.models.detr.modeling_detr import DetrModelOutput, DetrObjectDetectionOutput, DetrSegmentationOutput

__all__ = ["DetrCustomModelOutput", "DetrCustomObjectDetectionOutput", "DetrCustomSegmentationOutput"]


@dataclass
class DetrCustomModelOutput(DetrModelOutput):
    """Output of [`DetrCustomModel`]: transformers' `DetrModelOutput`, field for field and in its order, so
    `return_dict=False` tuples and `outputs[i]` mean the same in both (None fields are left out of tuples).

    Args:
        last_hidden_state: `(batch_size, num_queries, d_model)`, the decoder output after its final LayerNorm.
        cache: Always None (DETR decodes all queries at once); kept for the field order of transformers.
        decoder_hidden_states: Decoder input and each layer's output, `(batch_size, num_queries, d_model)` each.
        decoder_attentions: Decoder self-attention weights `(batch_size, heads, num_queries, num_queries)`.
        cross_attentions: Cross-attention weights `(batch_size, heads, num_queries, height * width)`.
        encoder_last_hidden_state: `(batch_size, height * width, d_model)`.
        encoder_hidden_states: Encoder input and each layer's output, `(batch_size, height * width, d_model)`.
        encoder_attentions: Encoder weights `(batch_size, heads, height * width, height * width)`.
        intermediate_hidden_states: `(decoder_layers, batch_size, num_queries, d_model)`, every decoder layer's
            output through the final LayerNorm; only when `config.auxiliary_loss`.
        denoising_hidden_states: `(decoder_layers, batch_size * G, 2M, d_model)`, every decoder layer's output for
            the denoising queries (`denoising.py`); training with `config.num_denoising_groups` only.
    """

    denoising_hidden_states: torch.FloatTensor | None = None


@dataclass
class DetrCustomObjectDetectionOutput(DetrObjectDetectionOutput):
    """Output of [`DetrCustomForObjectDetection`]: transformers' `DetrObjectDetectionOutput`, field for field and
    in its order.

    Args:
        loss: Total weighted loss (scalar), when `labels` are given.
        loss_dict: Every loss term and logged metric (`loss_ce`, `loss_bbox`, `loss_giou`, `cardinality_error`,
            `class_error`, and `*_k` for auxiliary output `k`), when `labels` are given.
        logits: `(batch_size, num_queries, num_labels + 1)`; the last class is "no object".
        pred_boxes: `(batch_size, num_queries, 4)`, normalised `(cx, cy, w, h)` relative to the unpadded image.
        auxiliary_outputs: One `{"logits", "pred_boxes"}` dict per decoder layer but the last, first layer
            first; when `config.auxiliary_loss` and the model is training or given `labels`.
        last_hidden_state: `(batch_size, num_queries, d_model)`.
        decoder_hidden_states, decoder_attentions, cross_attentions, encoder_last_hidden_state,
        encoder_hidden_states, encoder_attentions: As in [`DetrCustomModelOutput`].
    """


@dataclass
class DetrCustomSegmentationOutput(DetrSegmentationOutput):
    """Output of [`DetrCustomForSegmentation`]: transformers' `DetrSegmentationOutput`, field for field and in its
    order.

    Args:
        loss: Total weighted loss (scalar), when `labels` are given.
        loss_dict: The detection terms of [`DetrCustomObjectDetectionOutput`] plus `loss_mask` (sigmoid focal) and
            `loss_dice`, when `labels` are given.
        logits: `(batch_size, num_queries, num_labels + 1)`; the last class is "no object".
        pred_boxes: `(batch_size, num_queries, 4)`, normalised `(cx, cy, w, h)` relative to the unpadded image.
        pred_masks: `(batch_size, num_queries, height / 4, width / 4)` mask logits over the padded input (stride
            4, rounded up).
        auxiliary_outputs, last_hidden_state, decoder_hidden_states, decoder_attentions, cross_attentions,
        encoder_last_hidden_state, encoder_hidden_states, encoder_attentions: As in
            [`DetrCustomObjectDetectionOutput`].
        processed_sizes: `(batch_size, 2)` int64, the unpadded `(height, width)` of each image when the batch is
            padded (from `pixel_mask`), else None. A field transformers' output lacks, after all of its own: the
            segmentation post-processors crop `pred_masks` to these sizes when not given `processed_sizes`
            themselves, so a padded pipeline batch does not squash the masks of its smaller images.
    """

    processed_sizes: torch.LongTensor | None = None
