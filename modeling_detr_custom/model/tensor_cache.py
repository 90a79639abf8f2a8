"""Cache keys for tensors derived from weights (folded convolutions, stacked attention projections)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["derived_tensor_cache_key"]


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
