"""Initialisation helpers of the models: PyTorch's default bias init, and marking timm-initialised weights.

Only torch and transformers are imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

import math

from torch import nn
from transformers import initialization as init

__all__ = ["default_bias_init", "mark_initialized"]


def default_bias_init(module: nn.Linear | nn.Conv2d) -> None:
    """PyTorch's default bias initialisation of Linear/Conv2d, through the flag-aware `init` functions."""
    if module.bias is not None:
        fan_in = module.weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(module.bias, -bound, bound)


def mark_initialized(module: nn.Module) -> None:
    """Keeps transformers' init pass away from weights timm has initialised (or loaded pretrained)."""
    for submodule in module.modules():
        submodule._is_hf_initialized = True
