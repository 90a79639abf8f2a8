"""FrozenBatchNorm2d: BatchNorm with fixed statistics and affine parameters, as the original DETR's backbone."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d", "replace_batch_norm"]


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
