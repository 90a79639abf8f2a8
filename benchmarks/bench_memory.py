"""Peak memory (item 7): each model runs the work of items 1 and 4 in a fresh process of its own.

On CPU the figure is the peak resident set size of that process (`VmHWM` in `/proc/self/status`), so peaks of
the two models never mix (`ru_maxrss` cannot be used: Linux carries it over from the parent through fork and exec,
so a child of a large benchmark process reports the parent's size); the process imports the same modules and loads
the checkpoint the same way on both sides. On CUDA it is `torch.cuda.max_memory_allocated` over the work.

Run by `benchmarks/run.py`; the process entry point is

    python benchmarks/bench_memory.py --checkpoint DIR --model ours|transformers --work inference|training \
        --sizes 800x1066 [--trainable-stages 3] [--num-labels 91]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import torch
from bench_common import Row
from bench_models import MODEL_SPECS, load_model, make_batch, training_labels

__all__ = ["memory_rows", "peak_memory_mib"]

SIDES = ("transformers", "ours")


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(value) for value in size.split("x")) for size in text.split(",")]


def _peak_rss_mib() -> float:
    """Peak resident set size of this process since its exec, in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        match = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    # Elsewhere (macOS: bytes, and not inherited the same way) the rusage figure is the best available.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def _measure(checkpoint: Path, spec_name: str, side: str, work: str, sizes: list[tuple[int, int]]) -> dict:
    """Runs the work twice (the second run sees warm caches, as in steady use) and returns the peaks in MiB."""
    torch.set_num_threads(2)
    spec = MODEL_SPECS[spec_name]
    model = load_model(spec, checkpoint, side)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    inputs = {key: value.to(device) for key, value in make_batch(sizes).items()}
    loaded_mib = _peak_rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if work == "inference":
        with torch.no_grad():
            for _ in range(2):
                model(**inputs)
    else:
        model.train()
        labels = [
            {key: value.to(device) for key, value in target.items()}
            for target in training_labels(len(sizes), spec.num_labels)
        ]
        optimizer = torch.optim.AdamW(
            [param for param in model.parameters() if param.requires_grad], lr=1e-4, fused=True
        )
        for _ in range(2):
            model(**inputs, labels=[dict(target) for target in labels]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    peak_rss_mib = _peak_rss_mib()
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"peak_rss_mib": peak_rss_mib, "rss_after_loading_mib": loaded_mib, "cuda_peak_mib": cuda_peak}


def peak_memory_mib(checkpoint: Path, spec_name: str, side: str, work: str, sizes: list[tuple[int, int]]) -> dict:
    """Runs `_measure` in a new Python process and returns its result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--checkpoint", str(checkpoint),
        "--spec", spec_name,
        "--model", side,
        "--work", work,
        "--sizes", ",".join(f"{height}x{width}" for height, width in sizes),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"Memory measurement {side} {work} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_rows(checkpoint: Path, spec_name: str, work_sizes: dict[str, list[tuple[int, int]]]) -> list[Row]:
    """One row per work (`inference`, `training`): peak memory of each model, measured in its own process."""
    rows = []
    for work, sizes in work_sizes.items():
        results = {side: peak_memory_mib(checkpoint, spec_name, side, work, sizes) for side in SIDES}
        key = "cuda_peak_mib" if results["ours"]["cuda_peak_mib"] is not None else "peak_rss_mib"
        ours, theirs = results["ours"][key], results["transformers"][key]
        loaded = {side: results[side]["rss_after_loading_mib"] for side in SIDES}
        size_text = ", ".join(f"{height}x{width}" for height, width in sizes)
        case = f"peak {'CUDA allocated' if key == 'cuda_peak_mib' else 'RSS'}, {work}, {size_text}"
        note = (
            f"RSS after loading: ours {loaded['ours']:.0f}, transformers {loaded['transformers']:.0f} MiB; "
            f"growth over it: ours {ours - loaded['ours']:.0f}, transformers {theirs - loaded['transformers']:.0f} MiB"
        )
        rows.append(Row("7", case, "MiB", ours, ours, theirs, theirs, *[theirs / ours] * 3, target=1.0, note=note))
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--spec", choices=sorted(MODEL_SPECS), default="r50")
    parser.add_argument("--model", choices=SIDES, required=True)
    parser.add_argument("--work", choices=("inference", "training"), required=True)
    parser.add_argument("--sizes", type=_parse_sizes, required=True, help="HxW of each image, comma-separated")
    arguments = parser.parse_args()
    print(json.dumps(_measure(arguments.checkpoint, arguments.spec, arguments.model, arguments.work, arguments.sizes)))


if __name__ == "__main__":
    _main()
