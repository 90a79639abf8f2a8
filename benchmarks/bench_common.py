"""Shared benchmark plumbing: interleaved timing, result rows, the printed table and the machine description.

Every figure is a comparison measured in the same run: calls to ours and to the reference alternate within every
repeat (AB BA AB ...), so load from other processes on a shared machine hits both alike, and each row keeps the minimum
and the median over repeats of both sides, and the ratios built from them.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import transformers

__all__ = ["Row", "interleaved_seconds", "machine_description", "markdown_table", "print_table", "row_from_seconds"]


@dataclass
class Row:
    """One line of the results table.

    `ours_*`/`theirs_*` are in `unit` (lower is better: seconds or MiB); `x_*` say how many times better ours is
    (the reference's value divided by ours; `> 1` means ours is better): from the minima, from the medians, and
    the median over repeats of the ratio within each repeat (`x_paired`, robust to load that drifts between
    repeats). `target` is the least acceptable `x`.
    """

    item: str
    case: str
    unit: str
    ours_min: float
    ours_median: float
    theirs_min: float
    theirs_median: float
    x_min: float
    x_median: float
    x_paired: float
    target: float | None = None
    reference: str = "transformers"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether the ratios from the minima and from the medians reach the target (None without a target)."""
        return None if self.target is None else min(self.x_min, self.x_median) >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def interleaved_seconds(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Wall time of each call over `repeats` rounds, the calls alternating within every round.

    The order rotates from one round to the next (AB, BA, AB, ... for two calls), so that no call always runs
    right after another particular one (whose freed memory or cache state it would inherit).

    Args:
        calls: Name -> zero-argument callable.
        repeats: Timed rounds.
        warmup: Untimed rounds first (allocator, oneDNN primitive caches, lazy initialisation).
        sync: Called before reading the clock (e.g. `torch.cuda.synchronize`).

    Returns:
        Name -> the `repeats` durations in seconds, in round order.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1.")
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            if sync is not None:
                sync()
            start = time.perf_counter()
            call()
            if sync is not None:
                sync()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def row_from_seconds(
    item: str,
    case: str,
    ours: list[float],
    theirs: list[float],
    unit: str,
    per: int = 1,
    target: float | None = None,
    reference: str = "transformers",
    note: str = "",
) -> Row:
    """A row of seconds per unit of work (`unit`, e.g. "s/image" with `per` images per call); lower is better."""
    ours_min, ours_median = min(ours) / per, statistics.median(ours) / per
    theirs_min, theirs_median = min(theirs) / per, statistics.median(theirs) / per
    return Row(
        item,
        case,
        unit,
        ours_min,
        ours_median,
        theirs_min,
        theirs_median,
        theirs_min / ours_min,
        theirs_median / ours_median,
        statistics.median(reference / value for value, reference in zip(ours, theirs)),
        target,
        reference,
        note,
    )


def print_table(rows: list[Row]) -> None:
    """The results as a fixed-width table, with the legend for `x`."""
    header = f"{'item':<5} {'case':<60} {'unit':<8} {'ours min':>9} {'ours med':>9} {'ref min':>9} {'ref med':>9}"
    header += f" {'x (min)':>8} {'x (med)':>8} {'x (pair)':>8} {'target':>7} {'ok':>4}  reference"
    print(header)
    print("-" * len(header))
    for row in rows:
        target = "" if row.target is None else f">={row.target:g}"
        passed = {None: "", True: "yes", False: "NO"}[row.passed]
        print(
            f"{row.item:<5} {row.case[:60]:<60} {row.unit:<8} {row.ours_min:>9.4g} {row.ours_median:>9.4g} "
            f"{row.theirs_min:>9.4g} {row.theirs_median:>9.4g} {row.x_min:>8.2f} {row.x_median:>8.2f} "
            f"{row.x_paired:>8.2f} {target:>7} {passed:>4}  {row.reference}{'; ' + row.note if row.note else ''}"
        )
    print(
        "x = how many times better ours is than the reference: its time / our time, our images per second / its "
        "images per second, its peak memory / our peak memory (min: from the best repeats, med: from the medians, "
        "pair: median of the per-repeat ratios)."
    )


def markdown_table(rows: list[Row]) -> str:
    """The results as a Markdown table (ratios first: they are the comparison; times only for scale)."""
    lines = [
        "| item | case | x (min) | x (median) | x (paired) | target | met | ours (median) | reference (median) | "
        "reference | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = "" if row.target is None else f">= {row.target:g}"
        passed = {None: "", True: "yes", False: "**no**"}[row.passed]
        note = row.note.replace("|", "\\|")  # a literal bar inside a cell
        lines.append(
            f"| {row.item} | {row.case} | {row.x_min:.2f} | {row.x_median:.2f} | {row.x_paired:.2f} | {target} | "
            f"{passed} | {row.ours_median:.4g} {row.unit} | {row.theirs_median:.4g} {row.unit} | {row.reference} | "
            f"{note} |"
        )
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()} ({fields.get('CPU(s)', '?').strip()} CPUs)"


def machine_description() -> dict[str, Any]:
    """CPU model, core count, load, library versions, threads and GPU (if any) for the results file."""
    description = {
        "cpu": _cpu_model(),
        "load_average_1_5_15_min": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    return description
