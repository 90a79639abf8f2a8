"""The Trainer callbacks that give `scripts/train_trainer.py` what `scripts/train.py` does in its loop.

- `SetEpochCallback`: new random crops per epoch.
- `EmaCallback`: the EMA of the weights (`ema.ModelEma`) updated after each optimizer step and saved into each
  checkpoint as `ema_state.pt`, from which a resumed run continues it (`load_ema_state`).
- `DetrEarlyStoppingCallback`: transformers' `EarlyStoppingCallback` (same counting), without its call for
  `load_best_model_at_end`: `best/` is written at every new best, and the Trainer keeps training weights to the end.
  Its count is part of the checkpoint's `trainer_state.json` (`restore_callback_states_from_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments

from modeling_detr_custom.data import DetectionSplit
from modeling_detr_custom.training.ema import ModelEma

__all__ = [
    "EMA_STATE_FILE",
    "DetrEarlyStoppingCallback",
    "EmaCallback",
    "SetEpochCallback",
    "load_ema_state",
    "save_ema_state",
]

EMA_STATE_FILE = "ema_state.pt"


class SetEpochCallback(TrainerCallback):
    """Gives the training split the epoch before each epoch's data loader starts (new random crops per epoch)."""

    def __init__(self, split: DetectionSplit) -> None:
        self.split = split

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.split.set_epoch(int(state.epoch or 0))


class EmaCallback(TrainerCallback):
    """Updates `ema` after every optimizer step (`DetrTrainer._save_checkpoint` saves it into every checkpoint)."""

    def __init__(self, ema: ModelEma) -> None:
        self.ema = ema

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, model: Any = None, **kwargs: Any):
        self.ema.update(getattr(model, "module", model))


def save_ema_state(ema: ModelEma, checkpoint: str | Path) -> None:
    """Write `ema` into a checkpoint folder (`DetrTrainer._save_checkpoint` calls it before the completion marker)."""
    torch.save(ema.state_dict(), Path(checkpoint) / EMA_STATE_FILE)


def load_ema_state(ema: ModelEma, checkpoint: str | Path) -> None:
    """Continue `ema` from the checkpoint a resumed run starts from.

    Raises:
        ValueError: the checkpoint was written without `--ema_decay` (no `ema_state.pt`).
    """
    path = Path(checkpoint) / EMA_STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"--ema_decay: {checkpoint} holds no EMA of the weights ({EMA_STATE_FILE}); it was trained without "
            "--ema_decay. Resume without it, or start a new run."
        )
    ema.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class DetrEarlyStoppingCallback(EarlyStoppingCallback):
    """`EarlyStoppingCallback` for runs that write `best/` themselves (no `load_best_model_at_end` needed)."""

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if args.metric_for_best_model is None or args.eval_strategy == "no":
            raise ValueError(
                "--early_stopping_patience needs --metric_for_best_model and evaluations (--eval_strategy)"
            )
