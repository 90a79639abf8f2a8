"""One place that decides how the scripts run distributed: GPUs with NCCL, or CPU processes with gloo."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from accelerate import Accelerator

__all__ = ["has_accelerator", "launched_processes", "make_accelerator", "needs_cpu_process_group"]


def launched_processes() -> int:
    """How many processes the launcher started (`WORLD_SIZE`; 1 when run with plain `python`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def needs_cpu_process_group() -> bool:
    """True when the launcher started several processes on a machine without an accelerator.

    Under `torchrun` or `accelerate launch --multi_gpu --num_processes N`, Accelerate only forms a process group
    on the CPU (gloo) when told to use the CPU; without a GPU every process would otherwise train alone on the
    whole data set. Both the Accelerate loop and the Trainer ask this one question.
    """
    return launched_processes() > 1 and not has_accelerator()


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator) on this machine."""
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def make_accelerator(**kwargs: Any) -> Accelerator:
    """An `Accelerator` that also runs data-parallel on machines without a GPU (see `needs_cpu_process_group`)."""
    if _asked_for_processes_but_got_one():
        warnings.warn(
            "`accelerate launch --num_processes N` without --multi_gpu (or with --cpu) started a single process "
            "on this machine without a GPU: this run uses 1 process. For N CPU processes (gloo) use `accelerate "
            "launch --multi_gpu --num_processes N ...` (CPU is chosen automatically without a GPU) or `torchrun "
            "--nproc_per_node N`.",
            stacklevel=2,
        )
    if needs_cpu_process_group():
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


def _asked_for_processes_but_got_one() -> bool:
    """`accelerate launch` sets MASTER_PORT only when asked for several processes; its single-process launcher
    then leaves WORLD_SIZE unset (torchrun, which starts them, sets it)."""
    launched_by_accelerate = any(name.startswith("ACCELERATE_") for name in os.environ)
    return launched_by_accelerate and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ
