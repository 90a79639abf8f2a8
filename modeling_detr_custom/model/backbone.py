"""Convolutional backbone: a timm `features_only` CNN with FrozenBatchNorm2d, stage freezing, mask downsampling.

The speed path (BatchNorm folded into the convolutions, channels-last) lives in `fused_conv_bn.py`.
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
from torch import Tensor, nn

from .frozen_batch_norm import replace_batch_norm
from .fused_conv_bn import channels_last_pays_off, fold_frozen_batch_norms
from .tensor_cache import is_exporting

__all__ = [
    "DetrCustomBackbone",
    "TimmConvEncoder",
    "TransformersConvEncoder",
    "downsample_pixel_mask",
    "stage_index_per_parameter",
]


def stage_index_per_parameter(model: nn.Module, stage_modules: list[str]) -> dict[str, int]:
    """Maps each parameter name of a timm features model to the feature stage that computes it.

    Stage `i` holds every module from the end of stage `i - 1` up to and including `stage_modules[i]` (timm's
    `feature_info` module names, e.g. `act1, layer1, ..., layer4` for a ResNet: stage 0 is the stem).

    Args:
        model: A timm `features_only` model.
        stage_modules: Names of the modules that end each stage, in forward order.

    Returns:
        Parameter name -> stage index in `[0, len(stage_modules))`.
    """
    # Pre-order positions: a module's subtree occupies the positions right after its own.
    names = [name for name, _ in model.named_modules()]
    position = {name: index for index, name in enumerate(names)}
    stage_ends = []
    for stage_module in stage_modules:
        start = position[stage_module]
        subtree = [n for n in names[start + 1 :] if n.startswith(stage_module + ".")]
        stage_ends.append(start + len(subtree))
    stages = {}
    for param_name, _ in model.named_parameters():
        module_position = position[param_name.rpartition(".")[0]]
        stage = next((i for i, end in enumerate(stage_ends) if module_position <= end), len(stage_ends) - 1)
        stages[param_name] = stage
    return stages


def _create_features_model(name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model` with residual branches at full scale where the architecture has the option.

    timm zero-initialises the last BatchNorm of every residual block; a FrozenBatchNorm2d would keep those branches
    at zero forever when training from random weights. torchvision's ResNets (the original's) do not do this.
    """
    try:
        return timm.create_model(name, zero_init_last=False, **kwargs)
    except TypeError as error:
        if "zero_init_last" not in str(error):
            raise
        return timm.create_model(name, **kwargs)


class _StagedConvEncoder(nn.Module):
    """Stage freezing shared by the CNN wrappers: `self.model` is the CNN, `self._stage_of_parameter` maps each of
    its parameter names to a stage index (0 = stem)."""

    model: nn.Module
    _stage_of_parameter: dict[str, int]

    @property
    def num_stages(self) -> int:
        """Number of feature stages (5 for a ResNet: the stem and layer1-layer4)."""
        return max(self._stage_of_parameter.values()) + 1

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """Trains the last `trainable_layers` stages and freezes the others (parameters and BatchNorm statistics).

        Args:
            trainable_layers: 0 freezes everything; `num_stages` (or more) trains everything.
        """
        if trainable_layers < 0:
            raise ValueError(f"trainable_layers={trainable_layers} must be >= 0.")
        first_trainable = self.num_stages - trainable_layers
        for param_name, param in self.model.named_parameters():
            param.requires_grad_(self._stage_of_parameter[param_name] >= first_trainable)
        # A trainable BatchNorm2d of a frozen stage must not update its running statistics either (see `train`).
        self._frozen_batch_norms = [
            module
            for module in self.model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not any(param.requires_grad for param in module.parameters())
        ]
        self.train(self.training)

    def train(self, mode: bool = True) -> _StagedConvEncoder:
        """Sets training mode, keeping the trainable BatchNorms of frozen stages in eval mode."""
        super().train(mode)
        for module in getattr(self, "_frozen_batch_norms", []):
            module.train(False)
        return self


class TimmConvEncoder(_StagedConvEncoder):
    """A timm CNN returning its last feature map, with frozen BatchNorm and frozen early stages.

    The timm network is the child `model`, so parameter names are those of transformers' DETR checkpoints
    (`conv_encoder.model.layer1.0.conv1.weight`).

    Args:
        name: timm model name (`resnet18`, `resnet50`, `resnet101`, or any CNN with `features_only` support).
        num_channels: Input channels.
        dilation: Replace the stride of the last stage by dilation (DC5, output stride 16).
        pretrained: Load timm's pretrained weights (downloads them).
        freeze_batch_norm: Replace BatchNorm2d by FrozenBatchNorm2d.
        trainable_layers: Trainable stages counted from the last (5 stages: stem + 4); 3 = original recipe.
        fold_batch_norm: Let each convolution apply the frozen BatchNorm that follows it (`fold_frozen_batch_norms`;
            same outputs up to float rounding, fewer passes over the activations).
        channels_last: Run the CNN on channels-last tensors (faster oneDNN/cuDNN convolutions; same outputs up to
            float rounding). The feature map comes back channels-last, which makes its flattening free.
    """

    def __init__(
        self,
        name: str,
        num_channels: int = 3,
        dilation: bool = False,
        pretrained: bool = False,
        freeze_batch_norm: bool = True,
        trainable_layers: int = 3,
        fold_batch_norm: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.model = _create_features_model(
            name,
            pretrained=pretrained,
            features_only=True,
            out_indices=(-1,),
            in_chans=num_channels,
            output_stride=16 if dilation else None,
        )
        self.num_channels = self.model.feature_info.channels()[-1]
        if freeze_batch_norm:
            replace_batch_norm(self.model)
            if fold_batch_norm:
                fold_frozen_batch_norms(self.model)
        stage_modules = [info["module"] for info in self.model.feature_info.info]
        missing = sorted(set(stage_modules) - {module_name for module_name, _ in self.model.named_modules()})
        if missing:  # e.g. a ViT: its features model wraps the blocks, so stages cannot be frozen by name
            raise ValueError(
                f"backbone {name!r} is not supported: timm's features_only model has no stage modules {missing}. "
                "Use a CNN backbone (ResNet, RegNet, ConvNeXt, ...), e.g. 'resnet50'."
            )
        self._stage_of_parameter = stage_index_per_parameter(self.model, stage_modules)
        self._frozen_batch_norms: list[nn.Module] = []
        self.set_trainable_layers(trainable_layers)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Maps `(batch_size, num_channels, height, width)` images to the last feature map
        `(batch_size, channels, height / stride, width / stride)` (channels-last if `self.channels_last`)."""
        return self.forward_stages(pixel_values)[-1]

    def forward_stages(self, pixel_values: Tensor) -> list[Tensor]:
        """The feature maps of the stages `enable_stage_outputs` asked for (first to last), or the last one only."""
        if self.channels_last and self._channels_last_pays_off(pixel_values):
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return list(self.model(pixel_values))

    def enable_stage_outputs(self) -> list[int]:
        """Makes `forward_stages` return every stage's feature map (stem first), for the segmentation mask head.

        Detection keeps the last map only, so the earlier (large) maps are freed as soon as they are used. timm's
        features model returns the modules named in its `return_layers`; every stage module is already part of it.

        Returns:
            The channels of every stage, stem first.

        Raises:
            ValueError: the backbone's timm features model cannot return its intermediate stages.
        """
        names = [info["module"].replace(".", "_") for info in self.model.feature_info.info]
        if not isinstance(getattr(self.model, "return_layers", None), dict) or not all(n in self.model for n in names):
            raise ValueError(f"backbone {type(self.model).__name__} cannot return its intermediate stages.")
        self.model.return_layers = {name: str(index) for index, name in enumerate(names)}
        return [info["num_chs"] for info in self.model.feature_info.info]

    def _channels_last_pays_off(self, pixel_values: Tensor) -> bool:
        """Only on large enough batches, where the faster convolutions outweigh converting the activations (and in
        training the weights and their gradients) between memory formats; the threshold is lower for inference."""
        if is_exporting():  # a graph has no memory format, and the size test would fix the input sizes
            return False
        batch_size, _, height, width = pixel_values.shape
        return channels_last_pays_off(batch_size * height * width, self.training and torch.is_grad_enabled())


class TransformersConvEncoder(_StagedConvEncoder):
    """A transformers backbone (`load_backbone`, e.g. `ResNetBackbone` from a `ResNetConfig`) returning its last
    feature map, with frozen BatchNorm and frozen early stages, as transformers' DETR builds it with
    `use_timm_backbone=False`.

    The backbone is the child `model`, so parameter names are those of transformers' checkpoints
    (`conv_encoder.model.embedder.embedder.convolution.weight`, `conv_encoder.model.encoder.stages.0...`).
    Stages follow the backbone's names: `embedder`/`embeddings` and anything outside `encoder.stages.N` is the
    stem (stage 0), `encoder.stages.N` is stage `N + 1`.

    Args:
        config: The DETR config; its `backbone_config` (a transformers backbone config) builds the backbone.
        freeze_batch_norm: Replace BatchNorm2d by FrozenBatchNorm2d.
        trainable_layers: Trainable stages counted from the last (stem + stages); 3 = original recipe.
    """

    def __init__(self, config: Any, freeze_batch_norm: bool = True, trainable_layers: int = 3) -> None:
        super().__init__()
        from transformers.backbone_utils import load_backbone  # the timm path does not need it

        self.model = load_backbone(config)
        self.num_channels = self.model.channels[-1]
        if freeze_batch_norm:
            replace_batch_norm(self.model)
        self._stage_of_parameter = {name: _transformers_stage_index(name) for name, _ in self.model.named_parameters()}
        self._frozen_batch_norms: list[nn.Module] = []
        self.set_trainable_layers(trainable_layers)

    @property
    def num_stages(self) -> int:
        """Stem plus the backbone's stages (5 for a ResNet)."""
        return len(getattr(self.model, "stage_names", ())) or super().num_stages

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Maps `(batch_size, num_channels, height, width)` images to the last feature map
        `(batch_size, channels, height / stride, width / stride)`."""
        return self.model(pixel_values).feature_maps[-1]

    def forward_stages(self, pixel_values: Tensor) -> list[Tensor]:
        """The feature maps of the backbone's `out_features` (its config's), first to last."""
        return list(self.model(pixel_values).feature_maps)

    def enable_stage_outputs(self) -> list[int]:
        """The channels of the stages `forward_stages` returns (the backbone config's `out_features`).

        Raises:
            ValueError: fewer than four stages are returned (the mask head needs the last four).
        """
        channels = list(self.model.channels)
        if len(channels) < 4:
            raise ValueError(
                f"the transformers backbone returns {len(channels)} feature maps; segmentation needs the last four "
                "stages: set out_features=['stage1', 'stage2', 'stage3', 'stage4'] in backbone_config."
            )
        return channels


_STAGE_PATTERN = re.compile(r"(?:^|\.)stages\.(\d+)\.")


def _transformers_stage_index(name: str) -> int:
    """Stage of a transformers backbone parameter: `encoder.stages.N.` -> N + 1, anything else (the stem) -> 0."""
    match = _STAGE_PATTERN.search(name)
    return int(match.group(1)) + 1 if match else 0


def downsample_pixel_mask(pixel_mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour downsampling of a `(batch_size, height, width)` mask to `size`, as the original.

    Args:
        pixel_mask: 1 (or True) on real pixels, 0 on padding.
        size: Target `(height, width)` of the feature map.

    Returns:
        Boolean mask `(batch_size, *size)`, True on real pixels.
    """
    return nn.functional.interpolate(pixel_mask[None].float(), size=size)[0].bool()


class DetrCustomBackbone(nn.Module):
    """Runs the CNN and brings the pixel mask to the resolution of its feature map.

    Args:
        conv_encoder: The CNN (child `conv_encoder`, matching transformers' checkpoint names).
    """

    def __init__(self, conv_encoder: TimmConvEncoder | TransformersConvEncoder) -> None:
        super().__init__()
        self.conv_encoder = conv_encoder

    @property
    def num_channels(self) -> int:
        """Channels of the feature map."""
        return self.conv_encoder.num_channels

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Features and their mask.

        Args:
            pixel_values: `(batch_size, num_channels, height, width)`.
            pixel_mask: `(batch_size, height, width)`, 1 on real pixels; None when nothing is padded.

        Returns:
            feature_map `(batch_size, channels, h, w)` and mask `(batch_size, h, w)` bool (None if no pixel_mask).
        """
        feature_map = self.conv_encoder(pixel_values)
        if pixel_mask is None:
            return feature_map, None
        return feature_map, downsample_pixel_mask(pixel_mask, feature_map.shape[-2:])

    def forward_stages(self, pixel_values: Tensor, pixel_mask: Tensor | None) -> tuple[list[Tensor], Tensor | None]:
        """As `forward`, with the feature maps of every stage the conv encoder returns (first to last; see
        `enable_stage_outputs`) and the mask of the last one."""
        feature_maps = self.conv_encoder.forward_stages(pixel_values)
        if pixel_mask is None:
            return feature_maps, None
        return feature_maps, downsample_pixel_mask(pixel_mask, feature_maps[-1].shape[-2:])
