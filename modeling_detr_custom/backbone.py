"""Convolutional backbone: a timm `features_only` CNN, FrozenBatchNorm2d, stage freezing, mask downsampling.

Two speed-ups keep the outputs of the plain network (within float rounding, ~1e-6 relative) and the checkpoint
names: every frozen BatchNorm that directly follows a convolution is applied *by* that convolution, as a scaled
weight and a bias computed from the current values at each call (`fold_frozen_batch_norms`), and the CNN runs in
channels-last memory format, which oneDNN (CPU) and cuDNN convolutions prefer.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from timm.models._features import FeatureDictNet
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

__all__ = [
    "ConvFrozenBatchNorm2d",
    "DetrCustomBackbone",
    "FoldableReLU",
    "FrozenBatchNorm2d",
    "TimmConvEncoder",
    "derived_tensor_cache_key",
    "downsample_pixel_mask",
    "fold_frozen_batch_norms",
    "replace_batch_norm",
    "stage_index_per_parameter",
    "unfold_frozen_batch_norms",
]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (buffers, never trained).

    Identical to torchvision's `FrozenBatchNorm2d` with `eps=1e-5` as used by the original DETR; without the eps,
    backbones other than the torchvision ResNets produce NaNs. Its state has no `num_batches_tracked`, like the
    checkpoints transformers writes.

    Args:
        num_features: Number of channels.
        eps: Added to the variance before the inverse square root.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # Set by `fold_frozen_batch_norms`: the preceding ConvFrozenBatchNorm2d applies this normalisation.
        self.applied_by_convolution = False

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints of a trainable BatchNorm2d carry a counter that a frozen one has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """The normalisation as one affine map `x * scale + shift`, both `(num_features,)`."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def normalize(self, hidden_states: Tensor) -> Tensor:
        """`(batch_size, channels, height, width)` features normalised with the frozen statistics (one pass)."""
        scale, shift = self.scale_and_shift()
        return torch.addcmul(shift[None, :, None, None], hidden_states, scale[None, :, None, None])

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Normalises `(batch_size, channels, height, width)` features with the frozen statistics (or passes them
        through unchanged when the preceding convolution has already applied them)."""
        return hidden_states if self.applied_by_convolution else self.normalize(hidden_states)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def replace_batch_norm(module: nn.Module) -> None:
    """Replaces every BatchNorm2d below `module` by a frozen one holding the same values.

    Plain `nn.BatchNorm2d` (ResNets) becomes `FrozenBatchNorm2d`; timm's `BatchNormAct2d`, which also applies an
    activation, becomes timm's `FrozenBatchNormAct2d` so that the activation is kept.
    """
    for name, child in module.named_children():
        if isinstance(child, BatchNormAct2d):
            setattr(module, name, freeze_batch_norm_2d(child))
        elif isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=1e-5)
            if child.weight is not None and child.weight.device.type != "meta":
                with torch.no_grad():
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            replace_batch_norm(child)


def derived_tensor_cache_key(sources: list[Tensor | None], *extra: Any) -> tuple[Any, ...] | None:
    """Key under which a tensor computed from `sources` (weights, buffers) can be cached, or None if it must be
    recomputed at every call.

    The key holds each source's version counter (bumped by every in-place change: optimiser steps,
    `load_state_dict`, `copy_`), storage address, dtype and device (changed by `.to()` or `.data = ...`), so a
    cached value is used only while all sources are unchanged. No key while autograd must reach a source (the
    computation has to be recorded), while compiling (torch.compile traces the computation itself) or for
    inference-mode tensors (they have no version counter). Shared by the folded convolutions and the stacked
    attention projections (`transformer.py`).

    Args:
        sources: The tensors the cached value is computed from; None entries are skipped.
        extra: Anything else the value depends on (e.g. a memory format).
    """
    tensors = [tensor for tensor in sources if tensor is not None]
    if torch.compiler.is_compiling() or any(tensor.is_inference() for tensor in tensors):
        return None
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors):
        return None
    return (*extra, *((tensor._version, tensor.data_ptr(), tensor.dtype, tensor.device) for tensor in tensors))


class FoldableReLU(nn.ReLU):
    """`nn.ReLU` that the preceding `ConvFrozenBatchNorm2d` may apply instead; it then passes its input through."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.applied_by_convolution = False

    def forward(self, hidden_states: Tensor) -> Tensor:
        return hidden_states if self.applied_by_convolution else super().forward(hidden_states)


class ConvFrozenBatchNorm2d(nn.Conv2d):
    """`nn.Conv2d` that also applies the FrozenBatchNorm2d (and the ReLU, if any) following it: one convolution
    with weight `weight * scale` and bias `bias * scale + shift`, instead of a convolution and passes over its output.

    Where gradients must reach the weight (training), the folded weight is computed at every call, so gradients
    flow through the product; where the weight is larger than the output (deep layers, small images) the output is
    normalised instead, which is then cheaper. Otherwise (inference, frozen stages) the fold is cached in the memory
    format of the input, under a key made of the version counters and storages of the weight and the BatchNorm
    buffers (`derived_tensor_cache_key`): any in-place update (optimiser step, `load_state_dict`, `copy_`) or
    replacement (`.to()`, `.data = ...`) recomputes it, so a stale fold is never used. Only weights smaller than
    their output are cached, which keeps peak memory below that of the unfolded model. Without autograd on CPU,
    the ReLU runs inside the oneDNN convolution (`mkldnn._convolution_pointwise`, the kernel torch.compile uses),
    saving one more pass over the output. Parameter names and values are those of the plain convolution.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Plain attributes, not submodules or buffers: the BatchNorm stays where the checkpoint names it.
        self.__dict__.update(frozen_batch_norm=None, relu=None, _folded_cache=None)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, batch_norm: FrozenBatchNorm2d, relu: FoldableReLU | None = None
    ) -> ConvFrozenBatchNorm2d:
        """Wraps `conv` (sharing its parameter tensors, so optimisers holding them keep working)."""
        folded = cls.__new__(cls)
        folded.__dict__.update(conv.__dict__)
        folded.__dict__.update(frozen_batch_norm=batch_norm, relu=relu, _folded_cache=None)
        for module in (batch_norm, relu):
            if module is not None:
                module.applied_by_convolution = True
        return folded

    def to_conv(self) -> nn.Conv2d:
        """The plain convolution (same parameter tensors); its BatchNorm and ReLU apply themselves again."""
        conv = nn.Conv2d.__new__(nn.Conv2d)
        extra = ("frozen_batch_norm", "relu", "_folded_cache")
        conv.__dict__.update({key: value for key, value in self.__dict__.items() if key not in extra})
        for module in (self.frozen_batch_norm, self.relu):
            if module is not None:
                module.applied_by_convolution = False
        return conv

    def _apply(self, *args: Any, **kwargs: Any) -> ConvFrozenBatchNorm2d:
        # `.to()`, `.half()`, ...: drop the cached fold now rather than holding it until the next call.
        self.__dict__["_folded_cache"] = None
        return super()._apply(*args, **kwargs)

    def _fold(self, memory_format: torch.memory_format, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """The folded weight (in `memory_format`) and bias, from the current values, in `dtype` (default: the
        weight's; products are taken in the weight's dtype before any cast)."""
        scale, shift = self.frozen_batch_norm.scale_and_shift()
        scale = scale.to(self.weight.dtype)[:, None, None, None]
        bias = shift if self.bias is None else self.bias * scale.flatten() + shift
        if torch.is_grad_enabled() and self.weight.requires_grad:
            weight = (self.weight * scale).contiguous(memory_format=memory_format)
        else:  # one pass, written in the convolution's memory format
            weight = torch.mul(self.weight, scale, out=torch.empty_like(self.weight, memory_format=memory_format))
        dtype = dtype or self.weight.dtype
        return weight.to(dtype), bias.to(dtype)

    def folded_weight_and_bias(
        self,
        memory_format: torch.memory_format = torch.contiguous_format,
        hidden_states: Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        """The convolution weight `(out, in, kh, kw)` and bias `(out,)` that include the BatchNorm.

        Without autograd through the weight, the fold is cached (see the class docstring) while the weight is
        smaller than the output it produces, and recomputed otherwise, so the cache never holds the large weights
        of deep layers (a copy of every backbone weight would raise peak memory). With autograd it is recomputed,
        or, where the weight is the larger, None is returned: normalising the output then costs less than the
        product over the weight and its gradient.

        Args:
            memory_format: Memory format of the returned weight (that of the input, so oneDNN needs no reorder).
            hidden_states: The input about to be convolved, `(B, C_in, H, W)`; None: always fold and cache.
            dtype: dtype of the returned tensors (autocast's); default: the weight's.
        """
        weight_is_smaller = hidden_states is None or self._output_positions(hidden_states) >= self.weight[0].numel()
        trainable = [param for param in (self.weight, self.bias) if param is not None and param.requires_grad]
        if torch.is_grad_enabled() and trainable:
            return self._fold(memory_format, dtype) if weight_is_smaller else None
        batch_norm = self.frozen_batch_norm
        sources = [self.weight, self.bias, batch_norm.weight, batch_norm.bias, batch_norm.running_mean]
        key = derived_tensor_cache_key([*sources, batch_norm.running_var], memory_format, dtype)
        if key is None or not weight_is_smaller:
            if self._folded_cache is not None:  # input sizes changed: free the weight copy
                self.__dict__["_folded_cache"] = None
            if not weight_is_smaller and (dtype is None or dtype == self.weight.dtype):
                return None  # normalising the smaller output costs less than folding the weight at every call
            return self._fold(memory_format, dtype)  # (under autocast the weight must be cast anyway)
        cache = self._folded_cache
        if cache is None or cache[0] != key:
            with torch.no_grad():
                cache = (key, *self._fold(memory_format, dtype))
            self.__dict__["_folded_cache"] = cache
        return cache[1], cache[2]

    def _output_positions(self, hidden_states: Tensor) -> int:
        """Batch size times output height times width (so output elements = this times `out_channels`)."""
        return hidden_states.numel() // self.in_channels // (self.stride[0] * self.stride[1])

    def _can_fuse_relu(self, hidden_states: Tensor, weight: Tensor) -> bool:
        """Whether oneDNN's convolution with a ReLU post-op applies: CPU, no autograd or autocast, plain padding."""
        return (
            hidden_states.device.type == "cpu"
            and hidden_states.dtype == weight.dtype
            and hidden_states.dtype in (torch.float32, torch.bfloat16)
            and not (torch.is_grad_enabled() and (hidden_states.requires_grad or weight.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and _MKLDNN_CONVOLUTION_POINTWISE is not None
        )

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Convolution, frozen BatchNorm and ReLU (if folded), `(B, C_in, H, W)` -> `(B, C_out, H', W')`.

        Under autocast without autograd through the weight, the convolution runs in autocast's dtype on a cached
        cast of the folded weight (autocast itself would cast the weight at every call), and its output stays in
        that dtype.
        """
        batch_norm = self.frozen_batch_norm
        if batch_norm is None or not batch_norm.applied_by_convolution:
            return super().forward(hidden_states)
        device_type = hidden_states.device.type
        if not torch.is_autocast_enabled(device_type) or (torch.is_grad_enabled() and self.weight.requires_grad):
            return self._forward_folded(hidden_states)
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return self._forward_folded(hidden_states.to(dtype), dtype)

    def _forward_folded(self, hidden_states: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        batch_norm, relu = self.frozen_batch_norm, self.relu
        applies_relu = relu is not None and relu.applied_by_convolution
        channels_last = hidden_states.dim() == 4 and hidden_states.is_contiguous(memory_format=torch.channels_last)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        folded = self.folded_weight_and_bias(memory_format, hidden_states, dtype)
        if folded is None:
            output = batch_norm.normalize(super().forward(hidden_states))
        elif applies_relu and self._can_fuse_relu(hidden_states, folded[0]):
            arguments = (self.padding, self.stride, self.dilation, self.groups)
            return _MKLDNN_CONVOLUTION_POINTWISE(hidden_states, *folded, *arguments, "relu", [None], "")
        else:
            output = self._conv_forward(hidden_states, *folded)
        return torch.relu_(output) if applies_relu else output


def _mkldnn_convolution_pointwise() -> Any:
    """oneDNN's convolution with a post-op (PyTorch's internal kernel for torch.compile), or None if absent."""
    try:
        return torch.ops.mkldnn._convolution_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_MKLDNN_CONVOLUTION_POINTWISE = _mkldnn_convolution_pointwise()
_RELU_TYPES = (nn.ReLU, FoldableReLU)
# Containers that run their children one after the other, in registration order.
_SEQUENTIAL_CONTAINERS = (nn.Sequential, FeatureDictNet)


def _block_candidates(block: nn.Module) -> list[tuple[str, str, str | None]]:
    """(conv, BatchNorm, ReLU) names in the forward of timm's ResNet blocks; the ReLU only where it directly
    follows the BatchNorm (the last ReLU comes after the residual sum)."""
    direct = isinstance(getattr(block, "drop_block", None), nn.Identity)
    if isinstance(block, Bottleneck):
        return [("conv1", "bn1", "act1"), ("conv2", "bn2", "act2" if direct else None), ("conv3", "bn3", None)]
    return [("conv1", "bn1", "act1" if direct else None), ("conv2", "bn2", None)]


def _conv_batch_norm_relu_names(module: nn.Module) -> list[tuple[str, str, str | None]]:
    """Names of (convolution, BatchNorm, ReLU or None) children of `module` where the BatchNorm directly consumes
    the convolution's output (and the ReLU the BatchNorm's) and nothing else does, so they can be applied as one."""
    children = dict(module.named_children())
    if isinstance(module, _SEQUENTIAL_CONTAINERS):
        names = list(children)
        candidates = list(zip(names[:-1], names[1:], [*names[2:], None]))
    elif isinstance(module, (BasicBlock, Bottleneck)):
        candidates = _block_candidates(module)
    else:
        return []
    return [
        (conv_name, norm_name, relu_name if type(children.get(relu_name)) in _RELU_TYPES else None)
        for conv_name, norm_name, relu_name in candidates
        if type(children.get(conv_name)) is nn.Conv2d
        and type(children.get(norm_name)) is FrozenBatchNorm2d
        and children[conv_name].out_channels == children[norm_name].weight.shape[0]
    ]


def fold_frozen_batch_norms(module: nn.Module) -> int:
    """Lets every convolution below `module` that feeds a FrozenBatchNorm2d apply it, and the ReLU right after it
    (see `ConvFrozenBatchNorm2d`).

    Only sequences whose execution order is known are folded: consecutive children of sequential containers and
    `conv{i}`/`bn{i}`/`act{i}` of timm's ResNet blocks. State-dict names and parameters are unchanged.

    Returns:
        The number of BatchNorms folded.
    """
    folded = 0
    for submodule in list(module.modules()):
        for conv_name, norm_name, relu_name in _conv_batch_norm_relu_names(submodule):
            relu = None
            if relu_name is not None:
                relu = FoldableReLU(inplace=getattr(submodule, relu_name).inplace)
                setattr(submodule, relu_name, relu)
            conv, batch_norm = getattr(submodule, conv_name), getattr(submodule, norm_name)
            setattr(submodule, conv_name, ConvFrozenBatchNorm2d.from_conv(conv, batch_norm, relu))
            folded += 1
    return folded


def unfold_frozen_batch_norms(module: nn.Module) -> int:
    """Undoes `fold_frozen_batch_norms`: plain convolutions followed by BatchNorms and ReLUs that apply themselves.

    Returns:
        The number of BatchNorms unfolded.
    """
    unfolded = 0
    for submodule in list(module.modules()):
        for name, child in list(submodule.named_children()):
            if isinstance(child, ConvFrozenBatchNorm2d):
                setattr(submodule, name, child.to_conv())
                unfolded += 1
    return unfolded


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


# Training-step measurements (CPU, batch 2): channels-last costs 2% with ResNet-18 at 256x216 px (110k pixels) and
# saves 9% at 384x344 (264k), 6% with ResNet-50 at 400x533; the crossover lies near 150k pixels per batch.
_MIN_PIXELS_FOR_CHANNELS_LAST_TRAINING = 150_000
# Inference (CPU, batch 1, ResNet-18 and ResNet-50 DETRs): channels-last costs 30% at 2x128x128 (33k pixels), is
# even at 256x256 (66k) and saves 11-22% from 384x384 (147k) on; the crossover lies near 100k pixels per batch.
_MIN_PIXELS_FOR_CHANNELS_LAST_INFERENCE = 100_000


class TimmConvEncoder(nn.Module):
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
        self._stage_of_parameter = stage_index_per_parameter(self.model, stage_modules)
        self._frozen_batch_norms: list[nn.Module] = []
        self.set_trainable_layers(trainable_layers)

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

    def train(self, mode: bool = True) -> TimmConvEncoder:
        """Sets training mode, keeping the trainable BatchNorms of frozen stages in eval mode."""
        super().train(mode)
        for module in self._frozen_batch_norms:
            module.train(False)
        return self

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Maps `(batch_size, num_channels, height, width)` images to the last feature map
        `(batch_size, channels, height / stride, width / stride)` (channels-last if `self.channels_last`)."""
        if self.channels_last and self._channels_last_pays_off(pixel_values):
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return self.model(pixel_values)[-1]

    def _channels_last_pays_off(self, pixel_values: Tensor) -> bool:
        """Only on large enough batches, where the faster convolutions outweigh converting the activations (and in
        training the weights and their gradients) between memory formats; the threshold is lower for inference."""
        batch_size, _, height, width = pixel_values.shape
        training = self.training and torch.is_grad_enabled()
        threshold = _MIN_PIXELS_FOR_CHANNELS_LAST_TRAINING if training else _MIN_PIXELS_FOR_CHANNELS_LAST_INFERENCE
        return batch_size * height * width >= threshold


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

    def __init__(self, conv_encoder: TimmConvEncoder) -> None:
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
