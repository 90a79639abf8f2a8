"""DETR for panoptic and instance segmentation: the detector plus the original's mask head (`DETRsegm`).

Parameter names are those of transformers' `DetrForSegmentation` in the Hub format (`detr.model.*`,
`detr.class_labels_classifier.*`, `bbox_attention.q_linear`, `mask_head.lay1`, ...), so its checkpoints load with
no renaming and ours load into it. Every import of the package is relative: this file and its siblings are copied
next to Hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .configuration_detr_custom import DetrCustomConfig
from .detection_heads import build_criterion
from .mask_head import DetrCustomMaskHeadSmallConv, DetrCustomMHAttentionMap
from .mask_losses import SegmentationCriterion
from .model_inputs import check_pixel_inputs, key_padding_mask_of
from .model_outputs import DetrCustomSegmentationOutput
from .modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomPreTrainedModel, _default
from .validation import validate_labels

__all__ = ["DetrCustomForSegmentation", "DetrCustomSegmentationOutput"]

# `auto_map` of a segmentation checkpoint: the detection Auto classes would not find their `model.` weights in it.
_SEGMENTATION_AUTO_MAP = {
    "AutoConfig": "configuration_detr_custom.DetrCustomConfig",
    "AutoModelForImageSegmentation": "modeling_segmentation.DetrCustomForSegmentation",
    "AutoModelForInstanceSegmentation": "modeling_segmentation.DetrCustomForSegmentation",
    "AutoModelForUniversalSegmentation": "modeling_segmentation.DetrCustomForSegmentation",
}


class DetrCustomForSegmentation(DetrCustomPreTrainedModel):
    """DETR with the original's segmentation head: a detector (`detr`, a [`DetrCustomForObjectDetection`]) whose
    decoder outputs attend to the encoder memory (`bbox_attention`), and a small FPN-style convolutional head over
    backbone stages 3, 2, 1 (`mask_head`) that turns each query's attention maps into a mask at stride 4.

    The original trains the detector first, then this head with the detector frozen (`freeze_detector`); build
    that model with [`DetrCustomForSegmentation.from_detector`].

    Args:
        config: The model configuration (the detector's); `mask_loss_coefficient` and `dice_loss_coefficient`
            weigh the mask losses. Group DETR (`num_query_groups > 1`) is not supported.

    Raises:
        ValueError: `num_query_groups > 1`, `d_model < 16`, or a backbone that cannot return its intermediate
            stages.
    """

    def __init__(self, config: DetrCustomConfig) -> None:
        super().__init__(config)
        if config.num_query_groups != 1:
            raise ValueError(
                f"DetrCustomForSegmentation does not support num_query_groups={config.num_query_groups} (Group "
                "DETR); set num_query_groups=1."
            )
        self.detr = DetrCustomForObjectDetection(config)
        stage_channels = self.detr.model.backbone.conv_encoder.enable_stage_outputs()
        num_heads = config.encoder_attention_heads
        self.bbox_attention = DetrCustomMHAttentionMap(config.d_model, num_heads)
        self.mask_head = DetrCustomMaskHeadSmallConv(
            config.d_model + num_heads, stage_channels[-2:-5:-1], config.d_model
        )
        self._mask_head_convolutions = {id(m) for m in self.mask_head.modules() if isinstance(m, nn.Conv2d)}
        self.criterion = build_criterion(
            config,
            SegmentationCriterion,
            mask_loss_coefficient=config.mask_loss_coefficient,
            dice_loss_coefficient=config.dice_loss_coefficient,
        )
        del self.detr.criterion  # the detection loss is part of `self.criterion`
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """As the base class, plus the original's head initialisation: the mask head's convolutions
        kaiming-uniform (a=1) with zero biases, the attention-map projections xavier-uniform with zero biases."""
        super()._init_weights(module)
        if isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        if id(module) in getattr(self, "_mask_head_convolutions", ()):
            init.kaiming_uniform_(module.weight, a=1)
            init.zeros_(module.bias)
        attention = getattr(self, "bbox_attention", None)
        if attention is not None and (module is attention.q_linear or module is attention.k_linear):
            init.xavier_uniform_(module.weight, gain=self.config.init_xavier_std)
            init.zeros_(module.bias)

    @classmethod
    def from_detector(cls, detector: DetrCustomForObjectDetection | str, **kwargs: Any) -> DetrCustomForSegmentation:
        """A segmentation model around a trained detector (a model, or a folder/Hub id `from_pretrained` reads):
        the detector's weights are copied, the mask head is initialised (the original's first step).

        Args:
            detector: The detector or where to load it from.
            kwargs: Passed to `DetrCustomForObjectDetection.from_pretrained` when `detector` is a path.
        """
        if not isinstance(detector, DetrCustomForObjectDetection):
            detector = DetrCustomForObjectDetection.from_pretrained(detector, **kwargs)
        model = cls(detector.config)
        model.detr.load_state_dict(detector.state_dict(), strict=True)
        return model.to(detector.device)

    def freeze_detector(self) -> None:
        """Freezes every weight of the detector (backbone, transformer, class and box heads), so training updates
        the mask head only (the original's `--frozen_weights`). The backbone's trainable BatchNorms keep their
        running statistics too, so the detector's weights and buffers stay bit-identical in training."""
        self.detr.model.freeze_backbone()  # also the BatchNorm statistics
        self.detr.requires_grad_(False)

    def unfreeze_backbone(self) -> None:
        """Restores the configured backbone freezing (`config.backbone_trainable_layers`)."""
        self.detr.model.unfreeze_backbone()

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, with `auto_map` for AutoConfig and the segmentation Auto classes."""
        self.config.auto_map = dict(_SEGMENTATION_AUTO_MAP)
        return super(DetrCustomPreTrainedModel, self).save_pretrained(save_directory, *args, **kwargs)

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[Tensor, ...] | None = None,
        inputs_embeds: Tensor | None = None,
        decoder_inputs_embeds: Tensor | None = None,
        labels: Sequence[Mapping[str, Tensor]] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> DetrCustomSegmentationOutput | tuple[Any, ...]:
        """Detects objects, predicts one mask per query and, given `labels`, computes the loss; the arguments of
        transformers' `DetrForSegmentation.forward`.

        Args:
            pixel_values: `(batch_size, num_channels, height, width)` float images.
            pixel_mask: `(batch_size, height, width)`, 1 on real pixels and 0 on padding; None = no padding.
            decoder_attention_mask, encoder_outputs, decoder_inputs_embeds: As in [`DetrCustomModel.forward`].
            inputs_embeds: Not supported (the mask head needs the backbone's stages), as in transformers.
            labels: One dict per image with `class_labels` `(n,)`, `boxes` `(n, 4)` (as for detection) and `masks`
                `(n, height, width)` 0/1 at the input resolution.
            output_attentions, output_hidden_states, return_dict: As in [`DetrCustomModel.forward`].
            kwargs: Ignored, as in transformers.

        Returns:
            A `DetrCustomSegmentationOutput` (or its tuple, without the None entries); `pred_masks` has shape
            `(batch_size, num_queries, ceil(height / 4), ceil(width / 4))`.

        Raises:
            ValueError: `inputs_embeds` given, `labels` malformed, or inputs mis-shaped.
        """
        if inputs_embeds is not None or pixel_values is None:
            raise ValueError("DetrCustomForSegmentation needs pixel_values (inputs_embeds cannot feed the mask head).")
        if labels is not None:
            labels = validate_labels(labels, len(pixel_values), self.config.num_labels, self.device)
        model, detector = self.detr.model, self.detr
        check_pixel_inputs(pixel_values, pixel_mask, self.config.num_channels, self.dtype)
        stage_maps, mask = model.backbone.forward_stages(pixel_values, pixel_mask)  # mask (B, h, w) bool or None
        projected = model.input_projection(stage_maps[-1])  # (B, D, h, w)
        key_padding_mask = key_padding_mask_of(mask)  # (B, hw) or None when nothing is padded
        mask = None if key_padding_mask is None else mask
        denoising = detector._denoising_queries(labels)  # as the detector: training with labels only
        outputs = model._encode_decode(
            projected.flatten(2).transpose(1, 2),  # (B, hw, D)
            model.position_embedding(projected, mask),
            key_padding_mask,
            encoder_outputs,
            decoder_inputs_embeds,
            decoder_attention_mask,
            _default(output_attentions, self.config.output_attentions),
            _default(output_hidden_states, self.config.output_hidden_states),
            denoising,
        )
        hidden_states = outputs.last_hidden_state  # (B, Q, D)
        # The detector's own heads: anchors, box refinement and auxiliary outputs follow its configuration.
        predictions = detector._predictions(
            hidden_states, outputs.intermediate_hidden_states, labels is not None or self.training
        )
        logits, pred_boxes, auxiliary_outputs = predictions
        memory = outputs.encoder_last_hidden_state.transpose(1, 2).reshape(projected.shape)  # (B, D, h, w)
        attention_maps = self.bbox_attention(hidden_states, memory, mask)  # (B, Q, heads, h, w)
        masks = self.mask_head(projected, attention_maps, [stage_maps[-2], stage_maps[-3], stage_maps[-4]])
        pred_masks = masks.view(*hidden_states.shape[:2], *masks.shape[-2:])  # (B, Q, H/4, W/4)
        loss, loss_dict = None, None
        if labels is not None:
            loss, loss_dict = detector._detection_loss(
                self.criterion, predictions, labels, denoising, outputs.denoising_hidden_states,
                pred_masks=pred_masks, pixel_mask=pixel_mask,
            )  # fmt: skip
        output = DetrCustomSegmentationOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=logits,
            pred_boxes=pred_boxes,
            pred_masks=pred_masks,
            auxiliary_outputs=auxiliary_outputs,
            last_hidden_state=hidden_states,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            processed_sizes=None if key_padding_mask is None else _unpadded_sizes(pixel_mask),
        )
        return output if _default(return_dict, self.config.return_dict) else output.to_tuple()


def _unpadded_sizes(pixel_mask: Tensor) -> Tensor:
    """`(B, 2)` int64 `(height, width)` of each image's valid top-left region of a `(B, H, W)` pixel mask."""
    return torch.stack([pixel_mask[:, :, 0].sum(1), pixel_mask[:, 0, :].sum(1)], dim=1).long()


def _list_with_the_segmentation_pipeline() -> None:
    # As for detection (see modeling_detr_custom.py): transformers' image-segmentation pipeline checks the class name
    # against its static lists of built-in models and logs an error for any other, although everything works.
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES
    except ImportError:  # other transformers versions
        return
    MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES.setdefault(DetrCustomConfig.model_type, "DetrCustomForSegmentation")


_list_with_the_segmentation_pipeline()
