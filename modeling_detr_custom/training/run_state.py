"""The run an output folder belongs to: its resolved arguments, its id, and who may write into the folder.

Every run writes `training_args.json` (`{"run_id": ..., "arguments": {...}}`) into its output folder. Resuming
(`--resume_from_checkpoint latest|PATH`) restores the arguments from it, so `--data` and `--output_dir` are enough;
flags given again must agree with the run's own. A folder that holds another run is refused unless the user
resumes it or says `--overwrite_output_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modeling_detr_custom.training.arguments import DetrTrainingArguments
from modeling_detr_custom.training.atomic_folders import OutputWriteError, recover_folder

__all__ = [
    "RUN_FILE",
    "check_output_dir",
    "flags_given",
    "free_space_check",
    "read_run_file",
    "resolve_resume_arguments",
    "write_run_file",
]

RUN_FILE = "training_args.json"
# What a resumed run may change: bookkeeping, the length of training, where it logs. Everything else changes what
# the weights become, so a resumed run must use the original value.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "resume_from_checkpoint",
        "output_dir",
        "overwrite_output_dir",
        "max_steps",
        "num_train_epochs",
        "logging_steps",
        "report_to",
        "dataloader_num_workers",
        "per_device_eval_batch_size",
        "save_total_limit",
        "eval_steps",
        "eval_strategy",
        "early_stopping_patience",
        "early_stopping_threshold",
        "save_steps",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
    }
)


def flags_given(argv: Iterable[str]) -> set[str]:
    """The argument names written on a command line (`--model x`, `--model=x`, `--no-augment` -> `no_augment`)."""
    return {token[2:].split("=", 1)[0].replace("-", "_") for token in argv if token.startswith("--")}


def _non_default_fields(args: DetrTrainingArguments) -> set[str]:
    return {f.name for f in dataclasses.fields(args) if getattr(args, f.name) != f.default}


def read_run_file(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The `{"run_id", "arguments"}` a run wrote into `folder`, or None if there is none.

    Raises:
        ValueError: the file exists but cannot be read.
    """
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path}: {error}") from error
    if not isinstance(content, dict) or not isinstance(content.get("arguments"), dict):
        raise ValueError(f"{path} is not a run file written by scripts/train.py (no 'arguments' object)")
    return content


def resolve_resume_arguments(
    args: DetrTrainingArguments, given: set[str] | None = None
) -> tuple[DetrTrainingArguments, str | None]:
    """With `--resume_from_checkpoint`, the run's saved arguments completed by the flags given now.

    Args:
        args: the parsed arguments.
        given: the names of the flags on the command line (`flags_given`); None: every field that differs from
            its default counts as given (for calls from Python).

    Returns:
        The arguments to run with, and the id of the run being resumed (None without a run file or when not
        resuming).

    Raises:
        ValueError: a flag given again disagrees with the run's value; the message names each difference.
    """
    if not args.resume_from_checkpoint:
        return args, None
    source = Path(args.output_dir)
    if args.resume_from_checkpoint != "latest":
        source = Path(args.resume_from_checkpoint).parent
    saved = read_run_file(source)
    if saved is None:
        return args, None
    given = _non_default_fields(args) if given is None else given
    known = {f.name for f in dataclasses.fields(args)}
    differences, restored = [], {}
    for name, value in saved["arguments"].items():
        if name not in known or name in ("resume_from_checkpoint", "output_dir", "overwrite_output_dir"):
            continue
        if name not in given:
            restored[name] = value
        elif not _same(getattr(args, name), value) and name not in MAY_CHANGE_ON_RESUME:
            differences.append(f"--{name} {getattr(args, name)!r} (the run used {value!r})")
    if differences:
        raise ValueError(
            f"--resume_from_checkpoint: this command disagrees with the run in {source}: {'; '.join(differences)}. "
            "Drop these flags to keep the run's values, or train into a new --output_dir."
        )
    run_id = saved.get("run_id") if source.resolve() == Path(args.output_dir).resolve() else None
    return dataclasses.replace(args, **restored), run_id


def _same(given: Any, saved: Any) -> bool:
    """Equal values, or two spellings of one existing path (relative and absolute)."""
    if given == saved:
        return True
    if isinstance(given, str) and isinstance(saved, str) and os.path.exists(given) and os.path.exists(saved):
        return os.path.samefile(given, saved)
    return False


def check_output_dir(args: Any) -> None:
    """Refuse an output folder that holds another run, and one that cannot be written to, before any training.

    `args`: any arguments with `output_dir`, `resume_from_checkpoint` and `overwrite_output_dir` (both training
    scripts' dataclasses).

    Raises:
        ValueError: the folder holds another run and neither `--resume_from_checkpoint` nor
            `--overwrite_output_dir` was given.
        OutputWriteError: the folder cannot be created or written (naming it).
    """
    output_dir = Path(args.output_dir)
    for name in ("best", "last"):
        recover_folder(output_dir / name)
    holds_run = output_dir.is_dir() and (
        (output_dir / RUN_FILE).exists()
        or any(output_dir.glob("checkpoint-*"))
        or (output_dir / "best").exists()
        or (output_dir / "last").exists()
    )
    if holds_run and not (args.resume_from_checkpoint or args.overwrite_output_dir):
        raise ValueError(
            f"--output_dir {output_dir} already holds a training run. Resume it with --resume_from_checkpoint "
            "latest, replace it with --overwrite_output_dir, or choose another --output_dir."
        )
    probe = output_dir / f".write-test-{os.getpid()}"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as error:
        raise OutputWriteError(f"Cannot write to --output_dir {output_dir}: {error.strerror or error}") from error


def write_run_file(args: Any, run_id: str | None, arguments: dict[str, Any] | None = None) -> str:
    """Write the resolved arguments and the run id (a new one unless resuming this folder's run); returns the id.

    `arguments`: what to record (default: every field of the `args` dataclass; the Trainer script passes
    `TrainingArguments.to_dict()`, whose values JSON can hold).
    """
    run_id = run_id or uuid.uuid4().hex
    output_dir = Path(args.output_dir)
    tmp = output_dir / (RUN_FILE + ".tmp")
    content = {"run_id": run_id, "arguments": dataclasses.asdict(args) if arguments is None else arguments}
    try:
        tmp.write_text(json.dumps(content, indent=2))
        os.replace(tmp, output_dir / RUN_FILE)
    except OSError as error:
        raise OutputWriteError(f"Cannot write {output_dir / RUN_FILE}: {error.strerror or error}") from error
    return run_id


def free_space_check(output_dir: str | os.PathLike, model: Any) -> str | None:
    """A warning when the disk under `output_dir` has less free space than a run of `model` needs, else None.

    The estimate: a checkpoint (weights and two AdamW moments) and the best/ and last/ folders, plus one being
    written: six times the weights.
    """
    needed_bytes = 6 * sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(output_dir).free
    if free < needed_bytes:
        return (
            f"warning: {output_dir} has {free / 2**20:.0f} MiB free; one checkpoint with best/ and last/ needs about "
            f"{needed_bytes / 2**20:.0f} MiB."
        )
    return None
