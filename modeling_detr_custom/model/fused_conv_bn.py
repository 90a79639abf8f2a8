"""The backbone's speed path: frozen BatchNorms (and ReLUs) applied by the convolution before them, channels-last.

Every frozen BatchNorm that directly follows a convolution is applied *by* that convolution, as a scaled weight and
a bias computed from the current values at each call (`fold_frozen_batch_norms`); on CPU the ReLU after it runs
inside oneDNN's convolution (`torch.ops.mkldnn._convolution_pointwise`, a private op that exporters cannot take).
Outputs equal the plain network's within float rounding (~1e-6 relative) and checkpoint names are unchanged.
While exporting or tracing (`is_exporting`) the convolution, BatchNorm and ReLU run as plain ops instead.
`channels_last_pays_off` decides when the CNN runs in channels-last memory format.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models._features import FeatureDictNet
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

from .frozen_batch_norm import FrozenBatchNorm2d
from .tensor_cache import derived_tensor_cache_key, is_exporting

__all__ = [
    "ConvFrozenBatchNorm2d",
    "FoldableReLU",
    "channels_last_pays_off",
    "fold_frozen_batch_norms",
    "unfold_frozen_batch_norms",
]


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
        if is_exporting():  # plain ops, no size-dependent choice: the unfolded network's graph and numbers
            output = batch_norm.normalize(super().forward(hidden_states))
            return torch.relu(output) if self.relu is not None and self.relu.applied_by_convolution else output
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


# Training-step measurements (CPU, batch 2): channels-last costs 2% with ResNet-18 at 256x216 px (110k pixels) and
# saves 9% at 384x344 (264k), 6% with ResNet-50 at 400x533; the crossover lies near 150k pixels per batch.
_MIN_PIXELS_FOR_CHANNELS_LAST_TRAINING = 150_000
# Inference (CPU, batch 1, ResNet-18 and ResNet-50 DETRs): channels-last costs 30% at 2x128x128 (33k pixels), is
# even at 256x256 (66k) and saves 11-22% from 384x384 (147k) on; the crossover lies near 100k pixels per batch.
_MIN_PIXELS_FOR_CHANNELS_LAST_INFERENCE = 100_000


def channels_last_pays_off(num_pixels: int, training: bool) -> bool:
    """Whether a batch of `num_pixels` pixels (batch x height x width) runs faster in channels-last format.

    Only on large enough batches do the faster convolutions outweigh converting the activations (and in training
    the weights and their gradients) between memory formats; the threshold is lower for inference.
    """
    threshold = _MIN_PIXELS_FOR_CHANNELS_LAST_TRAINING if training else _MIN_PIXELS_FOR_CHANNELS_LAST_INFERENCE
    return num_pixels >= threshold
