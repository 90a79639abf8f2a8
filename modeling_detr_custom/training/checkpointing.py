"""Resumable training checkpoints written atomically with `accelerator.save_state`.

A checkpoint is first written to `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` only after every
process has finished writing and a completion marker holding the training progress is in place. A run killed at
any moment therefore leaves either a complete checkpoint or a `.tmp` folder that is never picked as "latest".
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

__all__ = ["TrainingProgress", "find_latest_checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
PROGRESS_FILE = "training_progress.json"


@dataclass
class TrainingProgress:
    """Where training stands: optimizer steps done, current epoch, batches of that epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, progress: TrainingProgress, keep: int = 2
) -> Path:
    """Save model, optimizer, scheduler and RNG states of every process; returns the final folder."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{progress.step}"
    tmp = output_dir / f"checkpoint-{progress.step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _remove_old_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in `output_dir`, or None. `.tmp` folders are ignored."""
    candidates = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / PROGRESS_FILE).is_file():
            candidates.append((int(match.group(1)), path))
    return max(candidates)[1] if candidates else None


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> TrainingProgress:
    """Restore every state saved by `save_checkpoint` and return the progress to continue from."""
    path = Path(path)
    progress_file = path / PROGRESS_FILE
    if not progress_file.is_file():
        raise ValueError(
            f"{path} is not a complete training checkpoint (no {PROGRESS_FILE}); pass a checkpoint-<step> folder "
            "written by scripts/train.py, or 'latest'."
        )
    accelerator.load_state(str(path))
    return TrainingProgress(**json.loads(progress_file.read_text()))


def _remove_old_checkpoints(output_dir: Path, keep: int) -> None:
    complete = sorted(
        (int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_PATTERN.match(p.name))
    )
    for _, path in complete[: max(len(complete) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in output_dir.glob("checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
