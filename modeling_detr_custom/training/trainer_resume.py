"""Where a `scripts/train_trainer.py` run resumes from, and which run now owns the output folder.

The Trainer's own `get_last_checkpoint` takes the highest-numbered folder, complete or not, of any run. Here
`latest` is the newest checkpoint of this folder's run whose completion marker is present and whose files have
their recorded sizes (`checkpointing.find_latest_checkpoint`, as `scripts/train.py`), and a checkpoint named
explicitly is checked the same way.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from modeling_detr_custom.training.checkpointing import (
    PROGRESS_FILE,
    CheckpointError,
    checkpoint_damage,
    find_latest_checkpoint,
)
from modeling_detr_custom.training.run_state import read_run_file

__all__ = ["resume_point"]


def resume_point(args: Any) -> tuple[str | None, str]:
    """The checkpoint to resume from (None: start fresh) and the id of the run that now writes into `output_dir`.

    `latest` is the newest complete, undamaged checkpoint of the run recorded in `output_dir` (each damaged newer one
    is reported); a run started with `--overwrite_output_dir` gets a new id, so it never resumes or rotates the
    checkpoints of the run it replaced. The main process decides; every process gets the same answer.

    Raises:
        CheckpointError: the checkpoint named by `--resume_from_checkpoint PATH` is incomplete or damaged.
    """
    state = PartialState()
    answer: list[Any] = [None, "", None]  # checkpoint, run id, error message
    if state.is_main_process:
        try:
            answer = [*_find_resume_point(args), None]
        except ValueError as error:  # CheckpointError, an unreadable run file: every process must stop
            answer = [None, "", str(error)]
    if state.num_processes > 1:
        broadcast_object_list(answer, from_process=0)
    if answer[2] is not None:
        raise CheckpointError(answer[2])
    return answer[0], answer[1]


def _find_resume_point(args: Any) -> tuple[str | None, str]:
    saved = read_run_file(args.output_dir) if args.resume_from_checkpoint else None
    run_id = saved.get("run_id", "") if saved else ""
    checkpoint = args.resume_from_checkpoint
    if checkpoint == "latest":
        found = find_latest_checkpoint(args.output_dir, run_id or None, report=print)
        if found is None:
            print(f"No complete checkpoint in {args.output_dir}; starting from scratch.")
        checkpoint = str(found) if found else None
    elif checkpoint:
        _check_named_checkpoint(Path(checkpoint))
        if Path(checkpoint).parent.resolve() != Path(args.output_dir).resolve():
            run_id = ""  # continuing another folder's checkpoint: a new run in this folder
    if checkpoint:
        print(f"Resuming from {checkpoint}.")
    return checkpoint, run_id or uuid.uuid4().hex


def _check_named_checkpoint(path: Path) -> None:
    """Refuse an incomplete or damaged checkpoint by name (one written by a plain `Trainer`, with no marker, passes)."""
    if not path.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {path}: no such checkpoint folder.")
    unmarked_trainer_checkpoint = not (path / PROGRESS_FILE).exists() and (path / "trainer_state.json").is_file()
    damage = None if unmarked_trainer_checkpoint else checkpoint_damage(path)
    if damage is not None:
        raise CheckpointError(
            f"{path} cannot be resumed from: {damage}. Pass another checkpoint-<step> folder, or 'latest' "
            "(the newest undamaged one)."
        )
