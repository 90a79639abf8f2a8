"""Resumable training checkpoints written atomically with `accelerator.save_state`.

A checkpoint is first written to `checkpoint-<step>.tmp`, fsynced, and renamed to `checkpoint-<step>` only after
every process has finished writing and a completion marker (`training_progress.json`) is in place. The marker holds
the training progress (step, epoch, best score and its step, the last evaluation, which weights (the model's or
their EMA) each of them scored, the early-stopping count), the id of the run that wrote
it, and the size of every file, so a checkpoint damaged after the fact (a truncated `optimizer.bin`) is recognised
and resuming falls back to the previous complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

from modeling_detr_custom.training.atomic_folders import (
    OutputWriteError,
    fsync_tree,
    replace_folder,
    temporary_sibling,
    write_on_every_process,
)

__all__ = [
    "CheckpointError",
    "TrainingProgress",
    "checkpoint_damage",
    "find_latest_checkpoint",
    "is_checkpoint_of",
    "load_checkpoint",
    "load_latest_checkpoint",
    "mark_complete",
    "remove_old_checkpoints",
    "save_checkpoint",
]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
PROGRESS_FILE = "training_progress.json"


class CheckpointError(ValueError):
    """A checkpoint named by the user is incomplete or damaged."""


@dataclass
class TrainingProgress:
    """Where training stands, everything a resumed run needs besides the saved states.

    `best_metrics`/`best_step`: the evaluation that `best/` holds (ties keep the earlier one); `metrics`/
    `metrics_step`: the latest evaluation, so the step a checkpoint was written at is not evaluated again.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    run_id: str = ""
    best_metrics: dict[str, float] | None = None
    best_step: int = -1
    metrics: dict[str, float] | None = None
    metrics_step: int = -1
    weights: str = "model"  # which weights `metrics` scored and last/ holds: "model" or "ema" (their average)
    best_weights: str = "model"  # the same for `best_metrics` and best/
    evaluations_without_improvement: int = 0  # the early-stopping count
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size in bytes, filled when saving


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, progress: TrainingProgress, keep: int = 2
) -> Path:
    """Save model, optimizer, scheduler and RNG states of every process; returns the final folder.

    Rotation keeps the newest `keep` checkpoints of this run (`progress.run_id`); another run's are never removed.

    Raises:
        OutputWriteError: disk full or no permission, naming the folder; the previous checkpoints are untouched.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{progress.step}"
    tmp = final.with_name(final.name + ".tmp")
    main = accelerator.is_main_process

    def complete() -> None:
        if main:
            mark_complete(tmp, progress)
            replace_folder(tmp, final)
            remove_old_checkpoints(output_dir, keep, progress.run_id)

    try:
        write_on_every_process(accelerator, lambda: temporary_sibling(final) if main else None, final)
        write_on_every_process(accelerator, lambda: accelerator.save_state(str(tmp)), final)
        write_on_every_process(accelerator, complete, final)
    except OutputWriteError:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def mark_complete(folder: Path, progress: TrainingProgress) -> None:
    """Write the completion marker of the fully written checkpoint `folder`: `progress` with every file's size.

    The files are flushed to the disk first, so a marker never describes data that is still in a cache.
    """
    fsync_tree(folder)
    progress.files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    progress.files.pop(PROGRESS_FILE, None)
    (folder / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))


def checkpoint_damage(path: str | os.PathLike) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from (missing marker, missing or truncated file), or None."""
    path = Path(path)
    try:
        progress = json.loads((path / PROGRESS_FILE).read_text())
    except FileNotFoundError:
        return f"no {PROGRESS_FILE} (an incomplete checkpoint)"
    except (OSError, ValueError) as error:
        return f"unreadable {PROGRESS_FILE}: {error}"
    for name, size in progress.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes instead of {size} (truncated or damaged)"
    return None


def _checkpoints(output_dir: str | os.PathLike, run_id: str | None) -> Iterator[Path]:
    """Complete-looking checkpoints of run `run_id` (None: any run), newest first."""
    candidates = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / PROGRESS_FILE).is_file():
            if run_id is None or _run_id(path) == run_id:
                candidates.append((int(match.group(1)), path))
    for _, path in sorted(candidates, reverse=True):
        yield path


def is_checkpoint_of(path: str | os.PathLike, run_id: str) -> bool:
    """True when `path` is a complete checkpoint written by run `run_id`."""
    return (Path(path) / PROGRESS_FILE).is_file() and _run_id(Path(path)) == run_id


def find_latest_checkpoint(
    output_dir: str | os.PathLike, run_id: str | None = None, report: Callable[[str], None] | None = None
) -> Path | None:
    """The undamaged checkpoint with the highest step (of run `run_id`, if given), or None; `.tmp` is ignored.

    `report` receives one line for each newer checkpoint skipped because it is damaged or incomplete (no marker:
    a write that a kill or a full disk cut short).
    """
    found = None
    for path in _checkpoints(output_dir, run_id):
        damage = checkpoint_damage(path)
        if damage is None:
            found = path
            break
        if report is not None:
            report(f"warning: {path} cannot be resumed from: {damage}. Trying the previous checkpoint.")
    if report is not None:
        found_step = int(CHECKPOINT_PATTERN.match(found.name).group(1)) if found else -1
        for path in sorted(Path(output_dir).glob("checkpoint-*"), reverse=True):
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and int(match.group(1)) > found_step and not (path / PROGRESS_FILE).exists():
                report(f"warning: {path} cannot be resumed from: {checkpoint_damage(path)}. Skipped.")
    return found


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> TrainingProgress:
    """Restore every state saved by `save_checkpoint` and return the progress to continue from.

    Raises:
        CheckpointError: `path` is not a complete checkpoint, or is damaged (the message says which file).
    """
    path = Path(path)
    damage = checkpoint_damage(path)
    if damage is not None:
        raise CheckpointError(
            f"{path} cannot be resumed from: {damage}. Pass another checkpoint-<step> folder written by "
            "scripts/train.py, or 'latest' (the newest undamaged one)."
        )
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # safetensors/torch raise many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} cannot be resumed from: {type(error).__name__}: {reason}") from error
    known = {k: v for k, v in json.loads((path / PROGRESS_FILE).read_text()).items() if k in _FIELDS}
    return TrainingProgress(**known)


def load_latest_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, run_id: str | None = None
) -> tuple[Path, TrainingProgress] | None:
    """Resume from the newest checkpoint of the run that loads; each damaged newer one is reported and skipped."""
    for path in _checkpoints(output_dir, run_id):
        try:
            return path, load_checkpoint(accelerator, path)
        except CheckpointError as error:
            accelerator.print(f"warning: {error} Trying the previous checkpoint.")
    return None


_FIELDS = set(TrainingProgress.__dataclass_fields__)


def _run_id(path: Path) -> str:
    try:
        return json.loads((path / PROGRESS_FILE).read_text()).get("run_id", "")
    except (OSError, ValueError):
        return ""


def remove_old_checkpoints(
    output_dir: str | os.PathLike, keep: int, run_id: str, protect: str | os.PathLike | None = None
) -> None:
    """Keep the newest `keep` complete checkpoints of run `run_id` (and `protect`); another run's are never removed."""
    output_dir = Path(output_dir)
    protected = Path(protect).resolve() if protect else None
    own = sorted(
        (int(m.group(1)), p)
        for p in output_dir.glob("checkpoint-*")
        if (m := CHECKPOINT_PATTERN.match(p.name)) and _run_id(p) == run_id and p.resolve() != protected
    )
    for _, path in own[: max(len(own) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in output_dir.glob("checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
