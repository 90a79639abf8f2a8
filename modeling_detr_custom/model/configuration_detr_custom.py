"""DETR configuration: transformers' `DetrConfig` with the original recipe's defaults and value checks."""

import math
import os
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import DetrConfig
from transformers.activations import ACT2FN

from .box_refinement import BOX_REFINEMENT_MODES
from .validation import check_choice, check_matching_costs, check_non_negative

__all__ = ["DetrCustomConfig"]

_POSITION_EMBEDDING_TYPES = ("sine", "learned")
_CLASS_LOSS_TYPES = ("cross_entropy", "sigmoid_focal", "varifocal")
_NUM_BACKBONE_STAGES = 5  # stem + 4 residual stages, the torchvision/timm convention
_DEFAULT_BACKBONE = "resnet50"


@strict
class DetrCustomConfig(DetrConfig):
    r"""Configuration of [`DetrCustomModel`] and [`DetrCustomForObjectDetection`].

    Accepts every [`transformers.DetrConfig`] argument, so a transformers DETR `config.json` (model_type `"detr"`)
    loads as is. Defaults follow the original DETR-R50 recipe (facebookresearch/detr), which differs from
    `DetrConfig` in `auxiliary_loss=True` and in dropout inside attention and after the FFN activation (0.1).

    The backbone is a timm CNN given as `backbone="resnet50"` (or any timm model with `features_only` support);
    it is stored in `backbone_config` (a `TimmBackboneConfig`), as transformers does, and read back as
    `config.backbone_config.backbone`. `dilation=True` gives the DC5 variant (output stride 16). With
    `use_timm_backbone=False` the backbone is transformers' own, built by `load_backbone` from `backbone_config`
    (e.g. a `ResNetConfig`; without one, DetrConfig's default ResNet-50), with transformers' parameter names.

    Args:
        pre_norm (`bool`, *optional*, defaults to `False`):
            LayerNorm before each attention/FFN block instead of after it (the original's `normalize_before`). In
            pre-norm mode the encoder ends with its own LayerNorm (`model.encoder.layernorm`).
        freeze_backbone_batch_norm (`bool`, *optional*, defaults to `True`):
            Replace the backbone's BatchNorm2d by FrozenBatchNorm2d (fixed statistics and affine parameters, as the
            original). `False` keeps trainable `nn.BatchNorm2d`, for training a backbone from scratch.
        backbone_trainable_layers (`int`, *optional*, defaults to 3):
            Number of trainable backbone stages counted from the last one (torchvision's convention): 3 trains
            layer2-layer4 and freezes the stem and layer1 (the original recipe); 5 trains everything; 0 nothing.
        use_pretrained_backbone (`bool`, *optional*, defaults to `False`):
            Load timm's ImageNet weights when the model is built. Off by default so that building a model never
            touches the network; training scripts set it on request. Ignored by `from_pretrained`, whose checkpoint
            provides the backbone weights.
        class_cost, bbox_cost, giou_cost (`float`, *optional*, defaults to 1, 5, 2):
            Weights of the Hungarian matching costs. Not all zero, none negative.
        bbox_loss_coefficient, giou_loss_coefficient (`float`, *optional*, defaults to 5, 2):
            Weights of the L1 and GIoU box losses (the classification loss has weight 1).
        eos_coefficient (`float`, *optional*, defaults to 0.1):
            Relative weight of the "no object" class in the classification loss, in `(0, 1]`.
        encoder_layerdrop, decoder_layerdrop (`float`, *optional*, defaults to 0.0):
            Accepted for compatibility with `DetrConfig`; only 0.0 is supported (transformers ignores them too).
        num_query_groups (`int`, *optional*, defaults to 1):
            Group DETR (Chen et al., 2023): in training, decode this many independent groups of `num_queries`
            queries, each with its own one-to-one matching and loss, and no attention between groups; more
            positive matches per image make a model trained from scratch converge much faster. Inference (eval
            mode) decodes group 0 only, so predictions keep `num_queries` queries and the checkpoint keeps every
            standard weight; the extra groups' queries are one extra table,
            `model.extra_query_position_embeddings`. 1 = the original DETR.
        query_anchor_boxes (`bool`, *optional*, defaults to `False`):
            Give every query a learned anchor box (`query_anchor_boxes.weight`, logits of `(cx, cy, w, h)`,
            initialised on a grid of centres covering the image) and predict boxes as
            `sigmoid(bbox_predictor(h) + anchor)`, as Anchor DETR / DAB-DETR do in their box heads. Matching is
            then spatially consistent from the first step, which speeds up training from scratch a lot. The
            checkpoint gains the anchor table, so it no longer loads into transformers' `DetrForObjectDetection`
            with the same outputs. `False` = the original DETR box head.
        anchor_box_size (`float`, *optional*, defaults to 0.2):
            Initial normalised width and height of the query anchor boxes, in `(0, 1)`.
        box_refinement (`str`, *optional*, defaults to `"none"`):
            Iterative box refinement across decoder layers (see `box_refinement.py`): `"iterative"` (Deformable
            DETR: layer `l` predicts a logit-space offset from layer `l - 1`'s box, taken without gradient, the
            first layer from its query anchor), `"look_forward_twice"` (DINO: the same, with the gradient), or
            `"none"` (the original: every layer predicts its box from scratch). No new weights.
        num_denoising_groups (`int`, *optional*, defaults to 0):
            Contrastive denoising training (DN-DETR, DINO; see `denoising.py`): in training, this many groups of
            noised ground-truth boxes and labels are decoded as extra queries (a positive that must reconstruct
            its object and a negative that must predict "no object", per object and group), in a decoder pass of
            their own so that nothing leaks to the matching queries. Inference is unchanged; the checkpoint gains
            the training-only `denoising.*` weights. 0 = the original DETR.
        denoising_box_noise_scale (`float`, *optional*, defaults to 1.0):
            Box noise of the denoising queries: corners move by up to this fraction of the half sides (positives),
            by 1x to 2x it (negatives). > 0.
        denoising_label_noise_ratio (`float`, *optional*, defaults to 0.5):
            Half of it is the probability that a denoising query's label is replaced by a random class; in [0, 1].
        class_loss_type (`str`, *optional*, defaults to `"cross_entropy"`):
            `"cross_entropy"`: softmax cross-entropy with the no-object class weighted by `eos_coefficient` (the
            original). `"sigmoid_focal"`: sigmoid focal loss (Lin et al.) over the `num_labels` object classes
            with matching cost to suit, as Deformable DETR; the no-object logit is then held at 0 so the usual
            softmax post-processing gives the sigmoid scores (see `DetrCustomForObjectDetection`).
            `"varifocal"`: IoU-aware classification (VarifocalNet, as RT-DETR and D-FINE): the same sigmoid
            scores and matching cost, but a matched query's target for its class is the IoU of its box with the
            target box instead of 1, so scores rank boxes by quality and a loose second box on an object scores
            low; negatives are weighted by `focal_alpha * p ** focal_gamma`.
        focal_alpha, focal_gamma (`float`, *optional*, defaults to 0.25, 2):
            Weight of positives and focusing exponent of the sigmoid focal loss and its matching cost (with
            `"varifocal"`: the weight of the negatives, 0.75 in VarifocalNet).
        mask_loss_coefficient, dice_loss_coefficient (`float`, *optional*, defaults to 1):
            Segmentation-only settings of `DetrConfig`, kept for compatibility and unused by detection.

    Raises:
        ValueError: a value is out of range or inconsistent; the message names the field.

    Example:

    ```python
    >>> from modeling_detr_custom import DetrCustomConfig
    >>> config = DetrCustomConfig(backbone="resnet18", num_queries=50, num_labels=3)
    >>> config.backbone_config.backbone
    'resnet18'
    ```
    """

    model_type = "detr_custom"

    # Original recipe: dropout 0.1 inside nn.MultiheadAttention and after the FFN activation, aux loss on.
    attention_dropout: float | int = 0.1
    activation_dropout: float | int = 0.1
    auxiliary_loss: bool = True
    # DetrConfig annotates these as int; the original (and any tuning) uses real numbers.
    class_cost: float | int = 1
    bbox_cost: float | int = 5
    giou_cost: float | int = 2
    mask_loss_coefficient: float | int = 1
    dice_loss_coefficient: float | int = 1
    bbox_loss_coefficient: float | int = 5
    giou_loss_coefficient: float | int = 2
    eos_coefficient: float | int = 0.1
    # Additions over DetrConfig.
    pre_norm: bool = False
    freeze_backbone_batch_norm: bool = True
    backbone_trainable_layers: int = 3
    use_pretrained_backbone: bool = False
    # Opt-in training speed-ups (defaults: the original DETR, no extra parameters).
    num_query_groups: int = 1
    query_anchor_boxes: bool = False
    anchor_box_size: float | int = 0.2
    box_refinement: str = "none"
    num_denoising_groups: int = 0
    denoising_box_noise_scale: float | int = 1.0
    denoising_label_noise_ratio: float | int = 0.5
    class_loss_type: str = "cross_entropy"
    focal_alpha: float | int = 0.25
    focal_gamma: float | int = 2

    def __post_init__(self, **kwargs: Any) -> None:
        use_timm_backbone = kwargs.pop("use_timm_backbone", True)
        backbone = kwargs.pop("backbone", None)
        backbone_kwargs = kwargs.pop("backbone_kwargs", None) or {}
        if not use_timm_backbone:
            # Older transformers configs (e.g. DETR's `no_timm` revision) may name the backbone next to its
            # backbone_config: the config decides. A name alone would mean downloading one.
            if self.backbone_config is None and (backbone is not None or backbone_kwargs):
                raise ValueError(
                    f"use_timm_backbone=False takes its backbone from backbone_config (e.g. transformers' "
                    f"ResNetConfig), not from backbone={backbone!r} / backbone_kwargs: building a config never "
                    "downloads one. Pass backbone_config instead."
                )
            # backbone_config None: DetrConfig builds its default, a ResNet-50 `ResNetConfig(out_features=["stage4"])`.
            kwargs["use_timm_backbone"] = False
        elif self.backbone_config is None:
            # Built here rather than by DetrConfig: with `backbone_kwargs` DetrConfig would ask the Hub whether
            # `backbone` is a repository, and building a config must never touch the network.
            self.backbone_config = _timm_backbone_config(
                backbone or _DEFAULT_BACKBONE, self.num_channels, self.dilation, backbone_kwargs
            )
        elif backbone is not None and _backbone_name(self.backbone_config) != backbone:
            raise ValueError(
                f"backbone={backbone!r} contradicts backbone_config (backbone "
                f"{_backbone_name(self.backbone_config)!r}); pass only one of them."
            )
        super().__post_init__(**kwargs)
        self.validate_detr_custom_values()

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reads a `config.json`; a transformers DETR config (model_type `"detr"`) is read as ours."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == DetrConfig.model_type:
            config_dict["model_type"] = cls.model_type
        return config_dict, kwargs

    def validate_detr_custom_values(self) -> None:
        """Checks every value a user can get wrong.

        Runs when the config is built, when a model is built from it and (as a `@strict` class validator) when it
        is saved, so a value changed after construction is caught too.

        Raises:
            ValueError: naming the offending field and the accepted range.
        """
        _check_backbone(self)
        _check_architecture(self)
        _check_matcher_and_loss(self)


def _timm_backbone_config(
    backbone: str, num_channels: int, dilation: bool, backbone_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The `backbone_config` dict DetrConfig writes for a timm backbone (so transformers can read our config)."""
    config = {
        "model_type": "timm_backbone",
        "backbone": backbone,
        "num_channels": backbone_kwargs.get("num_channels", num_channels),
        "features_only": True,
        "use_pretrained_backbone": False,
        "out_indices": list(backbone_kwargs.get("out_indices", [1, 2, 3, 4])),
    }
    if dilation:
        config["output_stride"] = backbone_kwargs.get("output_stride", 16)
    return config


def _backbone_name(backbone_config: Any) -> str | None:
    if isinstance(backbone_config, dict):
        return backbone_config.get("backbone")
    return getattr(backbone_config, "backbone", None)


def _check_backbone(config: DetrCustomConfig) -> None:
    backbone_config = config.backbone_config
    if backbone_config is None or not hasattr(backbone_config, "model_type"):
        raise ValueError(
            f"backbone_config must be a backbone configuration (timm's or transformers' such as ResNetConfig), got "
            f"{type(backbone_config).__name__}."
        )
    if backbone_config.model_type == "timm_backbone":
        if not backbone_config.backbone:
            raise ValueError("backbone_config.backbone is empty; set backbone to a timm model name such as 'resnet50'.")
        import timm  # the backbone is built with timm, so a name it does not know can never build

        if not timm.is_model(backbone_config.backbone):
            raise ValueError(
                f"backbone {backbone_config.backbone!r} is not a timm model name; use a CNN that timm builds with "
                "features_only, e.g. 'resnet50', 'resnet101', 'regnetx_002' (see timm.list_models())."
            )
    else:
        if config.dilation:
            raise ValueError(
                "dilation=True (DC5) needs a timm backbone (it sets timm's output_stride); transformers' "
                f"{type(backbone_config).__name__} has no such option. Use backbone='resnet50' or dilation=False."
            )
        if getattr(backbone_config, "num_channels", config.num_channels) != config.num_channels:
            raise ValueError(
                f"num_channels={config.num_channels} differs from backbone_config.num_channels="
                f"{backbone_config.num_channels}; set both to the number of image channels."
            )
    _check_int_range(config, "backbone_trainable_layers", 0, _NUM_BACKBONE_STAGES)
    _check_int_range(config, "num_channels", 1, None)


def _check_architecture(config: DetrCustomConfig) -> None:
    for name in (
        "d_model",
        "num_queries",
        "encoder_layers",
        "decoder_layers",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "encoder_attention_heads",
        "decoder_attention_heads",
    ):
        _check_int_range(config, name, 1, None)
    for name in ("encoder_attention_heads", "decoder_attention_heads"):
        if config.d_model % getattr(config, name) != 0:
            raise ValueError(
                f"{name}={getattr(config, name)} does not divide d_model={config.d_model}; choose a number of "
                "heads that divides d_model."
            )
    if config.position_embedding_type not in _POSITION_EMBEDDING_TYPES:
        raise ValueError(
            f"position_embedding_type={config.position_embedding_type!r} is unknown; use one of "
            f"{list(_POSITION_EMBEDDING_TYPES)}."
        )
    # Sine embeddings interleave sin/cos over d_model / 2 features per axis, so that half must be even.
    multiple = 4 if config.position_embedding_type == "sine" else 2
    if config.d_model % multiple != 0:
        raise ValueError(
            f"d_model={config.d_model} must be a multiple of {multiple} for "
            f"position_embedding_type={config.position_embedding_type!r}."
        )
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value} must be in [0, 1).")
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(config, name) != 0:
            raise ValueError(f"{name}={getattr(config, name)} is not supported; set it to 0.0.")
    if config.activation_function not in ACT2FN:
        raise ValueError(
            f"activation_function={config.activation_function!r} is unknown; use one of transformers' "
            "activations such as 'relu' or 'gelu'."
        )
    _check_int_range(config, "num_query_groups", 1, None)
    check_choice("", "box_refinement", config.box_refinement, BOX_REFINEMENT_MODES)
    _check_int_range(config, "num_denoising_groups", 0, None)
    if not (math.isfinite(config.denoising_box_noise_scale) and config.denoising_box_noise_scale > 0):
        raise ValueError(f"denoising_box_noise_scale={config.denoising_box_noise_scale} must be a finite number > 0.")
    if not 0.0 <= config.denoising_label_noise_ratio <= 1.0:
        raise ValueError(f"denoising_label_noise_ratio={config.denoising_label_noise_ratio} must be in [0, 1].")
    if not 0.0 < config.anchor_box_size < 1.0:
        raise ValueError(f"anchor_box_size={config.anchor_box_size} must be in (0, 1) (a fraction of the image side).")
    if config.num_labels is None or config.num_labels < 1:
        raise ValueError(f"num_labels={config.num_labels} must be at least 1 (set num_labels or id2label).")


def _check_matcher_and_loss(config: DetrCustomConfig) -> None:
    check_matching_costs("", config.class_cost, config.bbox_cost, config.giou_cost)
    names = ("bbox_loss_coefficient", "giou_loss_coefficient", "mask_loss_coefficient", "dice_loss_coefficient")
    check_non_negative("", {name: getattr(config, name) for name in names})
    check_choice("", "class_loss_type", config.class_loss_type, _CLASS_LOSS_TYPES)
    if not 0.0 <= config.focal_alpha <= 1.0:
        raise ValueError(f"focal_alpha={config.focal_alpha} must be in [0, 1] (the usual value is 0.25).")
    if not math.isfinite(config.focal_gamma) or config.focal_gamma < 0:
        raise ValueError(f"focal_gamma={config.focal_gamma} must be a finite number >= 0 (the usual value is 2).")
    if not 0.0 < config.eos_coefficient <= 1.0:
        raise ValueError(f"eos_coefficient={config.eos_coefficient} must be in (0, 1] (the original uses 0.1).")


def _check_int_range(config: DetrCustomConfig, name: str, low: int, high: int | None) -> None:
    value = getattr(config, name)
    if value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name}={value} must be >= {low}{upper}.")
