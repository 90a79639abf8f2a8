"""DETR models: the backbone + transformer (`DetrCustomModel`) and the detector with its heads and loss.

Parameter names are those transformers 5.x writes for `facebook/detr-resnet-50`, so its checkpoints load here
without renaming and ours load into transformers' DETR. Every import of the package is relative: this file and its
siblings are copied next to Hub checkpoints for `trust_remote_code=True`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .backbone import DetrCustomBackbone, TimmConvEncoder, TransformersConvEncoder, downsample_pixel_mask
from .configuration_detr_custom import DetrCustomConfig
from .criterion import SetCriterion
from .denoising import DenoisingBatch, DenoisingQueries, decode_denoising
from .detection_heads import DetectionHeadsMixin, build_criterion
from .loading_rules import check_base_weights, explain_load_error
from .mlp_head import DetrCustomMLPPredictionHead
from .model_inputs import as_encoder_output, check_pixel_inputs, key_padding_mask_of, per_group, square_feature_map
from .model_outputs import DetrCustomModelOutput, DetrCustomObjectDetectionOutput
from .position_embedding import UniformEmbedding, build_position_embedding
from .query_anchors import QueryAnchorBoxes
from .transformer import DetrCustomDecoder, DetrCustomDecoderOutput, DetrCustomEncoder, XavierLinear
from .validation import validate_labels
from .weight_init import default_bias_init, mark_initialized

__all__ = [
    "DetrCustomForObjectDetection",
    "DetrCustomModel",
    "DetrCustomModelOutput",
    "DetrCustomObjectDetectionOutput",
    "DetrCustomPreTrainedModel",
]

# `auto_map` entries written next to every checkpoint, so the three Auto classes load it with trust_remote_code.
_AUTO_MAP_CLASSES = {
    "AutoConfig": ("configuration_detr_custom", "DetrCustomConfig"),
    "AutoModel": ("modeling_detr_custom", "DetrCustomModel"),
    "AutoModelForObjectDetection": ("modeling_detr_custom", "DetrCustomForObjectDetection"),
}
# Initial sigmoid probability of every class under the focal loss (RetinaNet's prior).
_FOCAL_PRIOR_PROBABILITY = 0.01


class DetrCustomPreTrainedModel(PreTrainedModel):
    """Weight initialisation, checkpoint loading (with the base-weights rule) and Hub-style saving of the models."""

    config_class = DetrCustomConfig
    config: DetrCustomConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["DetrCustomBackbone", "DetrCustomEncoderLayer", "DetrCustomDecoderLayer"]
    # Trainable BatchNorm2d has a counter that FrozenBatchNorm2d (and transformers' checkpoints) lack.
    _keys_to_ignore_on_load_missing = [r"num_batches_tracked$"]
    _keys_to_ignore_on_load_unexpected = [r"num_batches_tracked$"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original DETR initialisation, through transformers' `init` so loaded weights are left alone.

        Encoder/decoder weight matrices are xavier-uniform (`XavierLinear`), attention biases zero, learned
        position tables uniform; everything else keeps PyTorch's default initialisation, and the backbone keeps
        timm's (see `DetrCustomModel`). Only leaf modules are handled: transformers skips modules without
        parameters of their own in remote code.
        """
        if isinstance(module, XavierLinear):
            bound = self.config.init_xavier_std * module.xavier_bound
            init.uniform_(module.weight, -bound, bound)
            if module.zero_bias:
                init.zeros_(module.bias)
            else:
                default_bias_init(module)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            default_bias_init(module)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, UniformEmbedding):
            init.uniform_(module.weight)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, SetCriterion):
            # A non-persistent buffer: from_pretrained re-creates it empty, so it must be rebuilt here.
            class_weight = torch.ones_like(module.class_weight)
            class_weight[-1] = module.eos_coefficient
            init.copy_(module.class_weight, class_weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, with one safety rule on top of transformers' behaviour.

        As in transformers: weights the checkpoint lacks outside the base model (a new head, e.g. loading a bare
        `DetrCustomModel` checkpoint into `DetrCustomForObjectDetection`; the Group DETR query table) are
        initialised, and transformers' load report lists them; `ignore_mismatched_sizes=True` re-initialises
        weights whose shape changed (e.g. the class head for a new `num_labels`); `output_loading_info=True`
        returns the report. Loads our checkpoints and transformers' `DetrForObjectDetection`/`DetrModel` ones.

        The rule (`check_base_weights`): backbone and transformer weights (backbone, input projection, position
        embeddings, encoder, decoder, query embeddings) that are missing, unexpected or of another shape raise,
        because a model with random weights there predicts garbage without any other sign.

        Args:
            allow_partial_base_weights: `True` turns that error into transformers' report (the weights are then
                initialised at random, e.g. to train a changed encoder from scratch).

        Raises:
            ValueError: naming the missing, unexpected and mismatched backbone/transformer keys; or one line naming
                the folder when its weights cannot be read (truncated) or do not fit its config.json.
        """
        allow_partial_base_weights = kwargs.pop("allow_partial_base_weights", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except Exception as error:  # a truncated weights file or weights of another model: one line naming the folder
            explained = explain_load_error(error, str(pretrained_model_name_or_path))
            if explained is None:
                raise
            raise explained from error
        if not allow_partial_base_weights:
            check_base_weights(loading_info, f"{cls.__name__} from {pretrained_model_name_or_path}")
        # Loading re-creates every parameter with requires_grad=True: freeze the configured backbone stages again.
        model.base_model.unfreeze_backbone()
        return (model, loading_info) if output_loading_info else model

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, writing `auto_map` for AutoConfig, AutoModel and
        AutoModelForObjectDetection (the source files are copied along when the classes are registered)."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        for auto_class, (module_name, class_name) in _AUTO_MAP_CLASSES.items():
            auto_map.setdefault(auto_class, f"{module_name}.{class_name}")
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class DetrCustomModel(DetrCustomPreTrainedModel):
    """DETR without heads: backbone, input projection, position embeddings, encoder and decoder.

    Args:
        config: The model configuration; `use_pretrained_backbone` loads timm's weights (network) when the model
            is built directly, never under `from_pretrained`.
    """

    # A detection checkpoint loads into the bare model: its heads are expected to be left out.
    _keys_to_ignore_on_load_unexpected = [
        r"num_batches_tracked$",
        r"^(class_labels_classifier|bbox_predictor|query_anchor_boxes)\.",
    ]

    def __init__(self, config: DetrCustomConfig) -> None:
        super().__init__(config)
        config.validate_detr_custom_values()
        # Under from_pretrained the model is built on the meta device and every weight comes from the checkpoint.
        building_for_checkpoint = torch.get_default_device().type == "meta"
        if config.backbone_config.model_type == "timm_backbone":
            conv_encoder = TimmConvEncoder(
                config.backbone_config.backbone,
                num_channels=config.num_channels,
                dilation=config.dilation,
                pretrained=config.use_pretrained_backbone and not building_for_checkpoint,
                freeze_batch_norm=config.freeze_backbone_batch_norm,
                trainable_layers=config.backbone_trainable_layers,
            )
        else:  # use_timm_backbone=False: a transformers backbone (load_backbone), named as in transformers' DETR
            conv_encoder = TransformersConvEncoder(
                config,
                freeze_batch_norm=config.freeze_backbone_batch_norm,
                trainable_layers=config.backbone_trainable_layers,
            )
        mark_initialized(conv_encoder)
        self.backbone = DetrCustomBackbone(conv_encoder)
        self.position_embedding = build_position_embedding(config.position_embedding_type, config.d_model)
        self.input_projection = nn.Conv2d(self.backbone.num_channels, config.d_model, kernel_size=1)
        self.query_position_embeddings = nn.Embedding(config.num_queries, config.d_model)
        if config.num_query_groups > 1:
            # Group DETR: queries of groups 1.. are used in training only; group 0 is the standard query table.
            self.extra_query_position_embeddings = nn.Embedding(
                (config.num_query_groups - 1) * config.num_queries, config.d_model
            )
        self.encoder = DetrCustomEncoder(config)
        self.decoder = DetrCustomDecoder(config)
        self.post_init()

    def freeze_backbone(self) -> None:
        """Freezes every backbone stage (as transformers' `DetrModel.freeze_backbone`)."""
        self.backbone.conv_encoder.set_trainable_layers(0)

    def unfreeze_backbone(self) -> None:
        """Restores the configured freezing: the last `config.backbone_trainable_layers` stages train."""
        self.backbone.conv_encoder.set_trainable_layers(self.config.backbone_trainable_layers)

    def forward(
        self,
        pixel_values: Tensor | None = None,
        pixel_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[Tensor, ...] | None = None,
        inputs_embeds: Tensor | None = None,
        decoder_inputs_embeds: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> DetrCustomModelOutput | tuple[Tensor, ...]:
        """Encodes images and decodes the object queries; the arguments of transformers' `DetrModel.forward`.

        Args:
            pixel_values: `(batch_size, num_channels, height, width)` float images.
            pixel_mask: `(batch_size, height, width)`, 1 on real pixels and 0 on padding; None = no padding.
            decoder_attention_mask: `(batch_size, num_queries)`, 1 on queries the decoder self-attention may attend
                to, 0 on masked ones; None = all.
            encoder_outputs: A previous call's encoder result (`BaseModelOutput` or a tuple whose first entry is
                the `(batch_size, height * width, d_model)` encoder output): the encoder is skipped. The backbone
                still runs on `pixel_values` for the padding mask and the position embeddings (as transformers).
            inputs_embeds: `(batch_size, height * width, d_model)` flattened features replacing the backbone and
                the input projection; the feature map is taken to be square (as transformers), and `pixel_mask` is
                downsampled to it.
            decoder_inputs_embeds: `(batch_size, num_queries, d_model)` decoder input instead of zeros.
            output_attentions: Return attention weights (computed without SDPA); defaults to the config.
            output_hidden_states: Return per-layer hidden states; defaults to the config.
            return_dict: Return a `DetrCustomModelOutput` instead of a tuple; defaults to the config.
            kwargs: Ignored, as transformers' DETR ignores keys it does not use (e.g. `decoder_input_ids`).

        Returns:
            A `DetrCustomModelOutput` (or its tuple, without the None entries).

        Raises:
            ValueError: neither `pixel_values` nor `inputs_embeds`, or inputs of the wrong shape.
        """
        output_attentions = _default(output_attentions, self.config.output_attentions)
        output_hidden_states = _default(output_hidden_states, self.config.output_hidden_states)
        return_dict = _default(return_dict, self.config.return_dict)
        features, position_embeddings, key_padding_mask = self._encoder_inputs(pixel_values, pixel_mask, inputs_embeds)
        output = self._encode_decode(
            features,
            position_embeddings,
            key_padding_mask,
            encoder_outputs,
            decoder_inputs_embeds,
            decoder_attention_mask,
            output_attentions,
            output_hidden_states,
            kwargs.get("denoising_queries"),  # training only
        )
        return output if return_dict else output.to_tuple()

    def _encode_decode(
        self,
        features: Tensor,
        position_embeddings: Tensor,
        key_padding_mask: Tensor | None,
        encoder_outputs: BaseModelOutput | tuple[Tensor, ...] | None,
        decoder_inputs_embeds: Tensor | None,
        decoder_attention_mask: Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
        denoising: DenoisingBatch | None = None,
    ) -> DetrCustomModelOutput:
        """Runs the encoder (unless `encoder_outputs` are given) and the decoder on flattened `(B, HW, D)` features."""
        if encoder_outputs is None:
            encoder_output = self.encoder(
                features, position_embeddings, key_padding_mask, output_attentions, output_hidden_states
            )
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_output.last_hidden_state,
                hidden_states=encoder_output.hidden_states,
                attentions=encoder_output.attentions,
            )
        else:
            if not isinstance(encoder_outputs, BaseModelOutput):
                encoder_outputs = as_encoder_output(encoder_outputs)
            if encoder_outputs.last_hidden_state.shape != features.shape:
                raise ValueError(
                    f"encoder_outputs.last_hidden_state has shape {tuple(encoder_outputs.last_hidden_state.shape)}, "
                    f"but these inputs give encoder features of shape {tuple(features.shape)}."
                )
        decoder_output = self._decode(
            encoder_outputs.last_hidden_state,
            position_embeddings,
            key_padding_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            decoder_inputs_embeds=decoder_inputs_embeds,
            decoder_attention_mask=decoder_attention_mask,
        )
        memory = encoder_outputs.last_hidden_state
        return DetrCustomModelOutput(
            last_hidden_state=decoder_output.last_hidden_state,
            decoder_hidden_states=decoder_output.hidden_states,
            decoder_attentions=decoder_output.attentions,
            cross_attentions=decoder_output.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            intermediate_hidden_states=decoder_output.intermediate_hidden_states,
            denoising_hidden_states=denoising
            and decode_denoising(self.decoder, memory, position_embeddings, key_padding_mask, denoising),
        )

    def _encoder_inputs(
        self, pixel_values: Tensor | None, pixel_mask: Tensor | None, inputs_embeds: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Flattened features `(B, HW, D)`, their position embeddings `(B, HW, D)` and key padding mask `(B, HW)`
        (None when nothing is padded), from the images or from `inputs_embeds` (which wins, as in transformers)."""
        if inputs_embeds is None:
            if pixel_values is None:
                raise ValueError("Pass either pixel_values or inputs_embeds (both are None).")
            check_pixel_inputs(pixel_values, pixel_mask, self.config.num_channels, self.dtype)
            feature_map, mask = self.backbone(pixel_values, pixel_mask)
            features = self.input_projection(feature_map).flatten(2).transpose(1, 2)  # (B, HW, D)
        else:
            feature_map = square_feature_map(inputs_embeds, self.config.d_model)  # (B, D, h, w), a view
            mask = None if pixel_mask is None else downsample_pixel_mask(pixel_mask, feature_map.shape[-2:])
            features = inputs_embeds
        key_padding_mask = key_padding_mask_of(mask)  # (B, HW) bool or None when nothing is padded
        # Without padding the positions depend on the shape alone (the embedding caches them).
        position_embeddings = self.position_embedding(feature_map, None if key_padding_mask is None else mask)
        return features, position_embeddings, key_padding_mask

    @property
    def num_active_query_groups(self) -> int:
        """Query groups decoded now: `config.num_query_groups` in training mode, 1 (group 0) in eval mode."""
        return self.config.num_query_groups if self.training else 1

    def _decode(
        self,
        encoder_hidden_states: Tensor,
        position_embeddings: Tensor,
        key_padding_mask: Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
        decoder_inputs_embeds: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> DetrCustomDecoderOutput:
        """Decodes the object queries of every active group; groups never attend to each other.

        Each group is decoded as a separate batch entry, image-major, which is the same as self-attention masked
        to within the group (cross-attention and the FFN are per query): `(B * G, Q, D)`. The hidden states of
        the groups are then laid side by side, `(B, G * Q, D)`; the attention weights (when requested) stay
        per `(image, group)` entry. With one group this is the plain DETR decoder. `decoder_inputs_embeds` and
        `decoder_attention_mask` cover all active queries, `(B, G * Q, D)` and `(B, G * Q)`.
        """
        batch_size, num_groups = encoder_hidden_states.shape[0], self.num_active_query_groups
        num_queries = num_groups * self.config.num_queries
        initial_hidden_states = per_group(
            decoder_inputs_embeds, "decoder_inputs_embeds", batch_size, num_queries, self.config.d_model, num_groups
        )
        query_padding_mask = per_group(
            decoder_attention_mask, "decoder_attention_mask", batch_size, num_queries, None, num_groups
        )
        if query_padding_mask is not None:
            query_padding_mask = query_padding_mask.bool()
        query_position_embeddings = self.query_position_embeddings.weight  # (Q, D)
        if num_groups > 1:
            query_position_embeddings = torch.cat(
                [query_position_embeddings, self.extra_query_position_embeddings.weight]
            )
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_groups, 0)  # (B*G, HW, D)
            position_embeddings = position_embeddings.repeat_interleave(num_groups, 0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.repeat_interleave(num_groups, 0)  # (B*G, HW)
        query_position_embeddings = query_position_embeddings.view(num_groups, -1, self.config.d_model)  # (G, Q, D)
        decoder_output = self.decoder(
            # (B*G, Q, D), group after group per image; a view without copy for one group
            query_position_embeddings[None].expand(batch_size, -1, -1, -1).flatten(0, 1),
            encoder_hidden_states,
            position_embeddings,
            key_padding_mask,
            output_intermediate=self.config.auxiliary_loss or self.config.box_refinement != "none",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            initial_hidden_states=initial_hidden_states,
            query_padding_mask=query_padding_mask,
        )
        if num_groups > 1:
            decoder_output.last_hidden_state = _merge_groups(decoder_output.last_hidden_state, num_groups)
            if decoder_output.intermediate_hidden_states is not None:
                decoder_output.intermediate_hidden_states = _merge_groups(
                    decoder_output.intermediate_hidden_states, num_groups
                )
        return decoder_output


def _merge_groups(hidden_states: Tensor, num_groups: int) -> Tensor:
    """`(..., B * G, Q, D)` -> `(..., B, G * Q, D)`: each image's query groups side by side, group 0 first."""
    *leading, batch_groups, num_queries, hidden_size = hidden_states.shape
    return hidden_states.reshape(*leading, batch_groups // num_groups, num_groups * num_queries, hidden_size)


class DetrCustomForObjectDetection(DetectionHeadsMixin, DetrCustomPreTrainedModel):
    """DETR with a class head (`num_labels + 1` logits, the last = no object) and a box head, plus the
    Hungarian loss (`SetCriterion`, built once from the config).

    Args:
        config: The model configuration.
    """

    def __init__(self, config: DetrCustomConfig) -> None:
        super().__init__(config)
        self.model = DetrCustomModel(config)
        self.class_labels_classifier = nn.Linear(config.d_model, config.num_labels + 1)
        self.bbox_predictor = DetrCustomMLPPredictionHead(config.d_model, config.d_model, 4, num_layers=3)
        if config.query_anchor_boxes:
            self.query_anchor_boxes = QueryAnchorBoxes(
                config.num_queries, config.num_query_groups, config.anchor_box_size
            )
        if config.num_denoising_groups:  # training only: the noised ground-truth queries (denoising.py)
            self.denoising = DenoisingQueries(
                config.num_labels, config.d_model, config.num_denoising_groups,
                config.denoising_box_noise_scale, config.denoising_label_noise_ratio,
            )  # fmt: skip
        self.criterion = build_criterion(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """As the base class, plus the opt-in heads: with the sigmoid focal loss the class biases start at the
        prior probability 0.01 (Lin et al.), so the many negatives do not swamp the first steps; with query anchor
        boxes the anchors start on their grid and the box head's last layer at zero, so every query's first box
        is its anchor."""
        super()._init_weights(module)
        if isinstance(module, QueryAnchorBoxes):
            init.copy_(module.weight, module.initial_logits())
        bbox_layers = getattr(self, "bbox_predictor", None)
        if self.config.query_anchor_boxes and bbox_layers is not None and module is bbox_layers.layers[-1]:
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        if module is getattr(self, "class_labels_classifier", None) and self.config.class_loss_type != "cross_entropy":
            init.constant_(module.bias, -math.log((1 - _FOCAL_PRIOR_PROBABILITY) / _FOCAL_PRIOR_PROBABILITY))

    def forward(
        self,
        pixel_values: Tensor | None,
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
    ) -> DetrCustomObjectDetectionOutput | tuple[Any, ...]:
        """Detects objects and, given `labels`, computes the loss; the arguments of transformers'
        `DetrForObjectDetection.forward` (`labels` is the 7th).

        Args:
            pixel_values: `(batch_size, num_channels, height, width)` float images (None with `inputs_embeds`).
            pixel_mask: `(batch_size, height, width)`, 1 on real pixels and 0 on padding; None = no padding.
            decoder_attention_mask, encoder_outputs, inputs_embeds, decoder_inputs_embeds: As in
                [`DetrCustomModel.forward`].
            labels: One dict per image with `class_labels` `(n,)` int64 in `[0, num_labels)` and `boxes` `(n, 4)`
                normalised `(cx, cy, w, h)` relative to the unpadded image; `n = 0` is valid.
            output_attentions: Return attention weights; defaults to the config.
            output_hidden_states: Return per-layer hidden states; defaults to the config.
            return_dict: Return a `DetrCustomObjectDetectionOutput` instead of a tuple; defaults to the config.
            kwargs: Ignored, as in transformers.

        Returns:
            A `DetrCustomObjectDetectionOutput` (or its tuple, without the None entries).

        Raises:
            ValueError: `labels` malformed (the message names the image and the key), or inputs mis-shaped.
        """
        if labels is not None:
            images = inputs_embeds if inputs_embeds is not None else pixel_values
            if images is None:
                raise ValueError("Pass either pixel_values or inputs_embeds (both are None).")
            labels = validate_labels(labels, len(images), self.config.num_labels, self.device)
        denoising = self._denoising_queries(labels)  # a DenoisingBatch in training with labels, else None
        outputs = self.model(
            pixel_values,
            pixel_mask,
            decoder_attention_mask,
            encoder_outputs,
            inputs_embeds,
            decoder_inputs_embeds,
            output_attentions,
            output_hidden_states,
            return_dict=True,
            denoising_queries=denoising,
        )
        predictions = self._predictions(
            outputs.last_hidden_state, outputs.intermediate_hidden_states, labels is not None or self.training
        )
        logits, pred_boxes, auxiliary_outputs = predictions  # (B, Q, C+1), (B, Q, 4) cxcywh; G*Q with query groups
        loss, loss_dict = None, None
        if labels is not None:
            loss, loss_dict = self._detection_loss(
                self.criterion, predictions, labels, denoising, outputs.denoising_hidden_states
            )
        output = DetrCustomObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=logits,
            pred_boxes=pred_boxes,
            auxiliary_outputs=auxiliary_outputs,
            last_hidden_state=outputs.last_hidden_state,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )
        return output if _default(return_dict, self.config.return_dict) else output.to_tuple()


def _default(value: bool | None, default: bool | None) -> bool:
    return bool(default) if value is None else value


def _list_with_the_object_detection_pipeline() -> None:
    # transformers' object-detection pipeline checks the model's class name against its static list of built-in
    # detectors (not the Auto registrations) and logs an error for any other although everything works. Adding the
    # name to that list is the registration it reads; it runs here so that trust_remote_code loads get it too.
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES
    except ImportError:  # other transformers versions
        return
    MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES.setdefault(DetrCustomConfig.model_type, "DetrCustomForObjectDetection")


_list_with_the_object_detection_pipeline()
