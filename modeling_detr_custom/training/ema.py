"""Exponential moving average (EMA) of a model's weights, as RF-DETR, Ultralytics and timm keep one.

After every optimizer step each floating-point tensor of the model's `state_dict` (parameters and BatchNorm
statistics) moves towards the model's: `ema = d * ema + (1 - d) * weight`. The decay warms up as TensorFlow's
`ExponentialMovingAverage(num_updates=...)`: `d = min(decay, (1 + n) / (10 + n))` after `n` updates, so the
average of a young run is not dominated by its random initial weights. Integer buffers (BatchNorm's
`num_batches_tracked`) are copied.

The average lives in float32 on the model's device, on every process (the processes hold the same weights, so
they hold the same average). `state_dict`/`load_state_dict` make it a checkpointed object
(`Accelerator.register_for_checkpointing`), so a resumed run continues the very same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["ModelEma", "check_ema_decay"]


def check_ema_decay(decay: float, option: str = "--ema_decay") -> None:
    """Raise `ValueError` naming `option` unless `decay` is 0 (off) or in (0, 1)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"{option} must be 0 (no EMA) or in (0, 1), e.g. 0.999; got {decay}.")


class ModelEma:
    """The moving average of `model`'s `state_dict`.

    Args:
        model: The model to average (unwrapped: the names are those of its own `state_dict`).
        decay: The largest decay, reached after the warm-up (0.999 averages over about the last 1000 steps).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        check_ema_decay(decay)
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: _copy(value) for name, value in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update uses: `min(decay, (1 + n) / (10 + n))`."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (call after each optimizer step)."""
        decay = self.current_decay()
        for name, value in model.state_dict().items():
            average = self.shadow[name]
            if average.is_floating_point():
                average.lerp_(value.detach().to(average.dtype), 1.0 - decay)
            else:
                average.copy_(value)
        self.num_updates += 1

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block `model` holds the averaged weights; afterwards exactly its own again (bit for bit)."""
        state = model.state_dict()
        saved = {name: value.detach().clone() for name, value in state.items()}
        with torch.no_grad():
            for name, value in state.items():
                value.copy_(self.shadow[name].to(value.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in state.items():
                    value.copy_(saved[name])

    def state_dict(self) -> dict:
        """The average and the update count (what a checkpoint saves)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s content in place (on the device the average lives on)."""
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


def _copy(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().clone()
    return value.float() if value.is_floating_point() else value
