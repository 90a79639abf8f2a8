"""Cache keys for tensors derived from weights (folded convolutions, stacked attention projections), and whether a
graph is being captured (export, tracing), where no cache and no speed path that exporters cannot take is used."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["derived_tensor_cache_key", "is_exporting"]


def derived_tensor_cache_key(sources: list[Tensor | None], *extra: Any) -> tuple[Any, ...] | None:
    """Key under which a tensor computed from `sources` (weights, buffers) can be cached, or None if it must be
    recomputed at every call.

    The key holds each source's version counter (bumped by every in-place change: optimiser steps,
    `load_state_dict`, `copy_`), storage address, dtype and device (changed by `.to()` or `.data = ...`), so a
    cached value is used only while all sources are unchanged. No key while autograd must reach a source (the
    computation has to be recorded), while compiling (torch.compile traces the computation itself) or for
    inference-mode tensors (they have no version counter), nor while exporting or tracing (the graph must read the
    weights, not a copy taken at capture time). Shared by the folded convolutions and the stacked
    attention projections (`transformer.py`).

    Args:
        sources: The tensors the cached value is computed from; None entries are skipped.
        extra: Anything else the value depends on (e.g. a memory format).
    """
    tensors = [tensor for tensor in sources if tensor is not None]
    if torch.compiler.is_compiling() or is_exporting() or any(tensor.is_inference() for tensor in tensors):
        return None
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors):
        return None
    return (*extra, *((tensor._version, tensor.data_ptr(), tensor.dtype, tensor.device) for tensor in tensors))


def is_exporting() -> bool:
    """True inside `torch.export`, `torch.onnx.export` (both exporters) and `torch.jit.trace`: graphs without value
    branches, shape-dependent Python decisions or private kernels."""
    is_exporting_fn = getattr(torch.compiler, "is_exporting", None)
    return bool(
        (is_exporting_fn is not None and is_exporting_fn()) or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    )
