"""DETR with transformers' `Trainer` (behind `scripts/train_trainer.py`).

The same data layer, augmentation, collate, label mapping, optimizer groups and COCO evaluator as the Accelerate
script; only the loop is the Trainer's. What the Trainer needs changed for DETR:

- `labels` is a list of per-image dicts (images hold different numbers of boxes). The Trainer moves it to the
  device as it is, but would gather and concatenate it in evaluation; `DetrTrainer.prediction_step` returns
  fixed-shape tensors instead: predictions `(logits, pred_boxes)` and label ids `(image_ids, orig_sizes)`.
- `CocoMetrics` scores each gathered batch as it comes (`batch_eval_metrics=True`): per batch, predictions become
  small CPU arrays in the evaluator; nothing accumulates on the device.
- The data set's raw columns feed the on-the-fly transform, so `remove_unused_columns` is always False.
- The backbone trains at `lr_backbone` (`build_param_groups`), and `lr_drop` gives the original StepLR.

The output folder follows `scripts/train.py`'s rules (`run_state.check_output_dir`, `atomic_folders`): a folder
holding another run is refused without `--resume_from_checkpoint`/`--overwrite_output_dir`, writability is checked
before the data loads, `best/` (highest `--metric_for_best_model`, AP by default; the Trainer keeps its score across
a resume) and `last/` are complete Hub folders written next to their final name and renamed into place, and a write
that fails (disk full, no permission) is one `OutputWriteError` on every process.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import SchedulerType, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import EvalLoopOutput

from modeling_detr_custom.data import DetectionSplit, load_detection_split
from modeling_detr_custom.evaluation.coco_evaluator import (
    DUPLICATE_RATE,
    METRIC_NAMES,
    PER_CLASS_METRIC_NAMES,
    metrics_for_json,
)
from modeling_detr_custom.training.arguments import DetrDataArguments
from modeling_detr_custom.training.atomic_folders import replace_folder, temporary_sibling, write_on_every_process
from modeling_detr_custom.training.checkpointing import (
    TrainingProgress,
    mark_complete,
    remove_old_checkpoints,
)
from modeling_detr_custom.training.distributed import has_accelerator, needs_cpu_process_group
from modeling_detr_custom.training.ema import ModelEma, check_ema_decay
from modeling_detr_custom.training.hub import hub_errors, push_folder_to_hub, render_model_card
from modeling_detr_custom.training.logging_utils import LossMeter
from modeling_detr_custom.training.model_selection import is_better
from modeling_detr_custom.training.models import checkpoint_processor, load_model_for_training
from modeling_detr_custom.training.optim import build_lr_scheduler, build_param_groups
from modeling_detr_custom.training.run_state import check_output_dir, free_space_check, write_run_file
from modeling_detr_custom.training.trainer_callbacks import (
    DetrEarlyStoppingCallback,
    EmaCallback,
    SetEpochCallback,
    load_ema_state,
    save_ema_state,
)
from modeling_detr_custom.training.trainer_metrics import CocoMetrics
from modeling_detr_custom.training.trainer_resume import resume_point

__all__ = [
    "CocoMetrics",
    "DetrDataArguments",
    "DetrTrainer",
    "DetrTrainerArguments",
    "TrainerRunResult",
    "train_with_trainer",
]

logger = logging.getLogger(__name__)


@dataclass
class DetrTrainerArguments(TrainingArguments):
    """`TrainingArguments` with the original DETR recipe as defaults, plus the backbone learning rate and StepLR.

    Every other `TrainingArguments` option works as usual (`--eval_strategy`, `--save_steps`, `--bf16`,
    `--push_to_hub`, `--hub_model_id`, `--resume_from_checkpoint`, ...).
    """

    output_dir: str | None = field(
        default="outputs/detr-custom-trainer",
        metadata={"help": "Where checkpoints go, and best/ and last/ (complete Hub repositories)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an --output_dir that holds another run (refused without this or a resume)."},
    )
    metric_for_best_model: str | None = field(
        default="AP", metadata={"help": "The evaluation metric that picks best/ (AP; ties keep the earlier model)."}
    )
    hub_strategy: str = field(
        default="end",
        metadata={"help": "With --push_to_hub, last/ is uploaded at the end ('end'); other strategies as the Trainer."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the transformer (1e-4)."})
    lr_backbone: float = field(
        default=1e-5, metadata={"help": "Learning rate of the backbone parameters (1e-5; 0 freezes the backbone)."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay, on every parameter (1e-4)."})
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping max norm (0.1)."})
    lr_scheduler_type: str = field(
        default="constant",
        metadata={
            "help": "The Trainer's schedule. With 'constant' (the default) --lr_drop applies the original StepLR; "
            "any other type (linear, cosine, ...) replaces it."
        },
    )
    lr_drop: int = field(
        default=200,
        metadata={"help": "Epoch after which every learning rate is multiplied by 0.1 (StepLR; 0 disables)."},
    )
    num_train_epochs: float = field(default=300, metadata={"help": "Number of training epochs (300)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Images per device per step (2)."})
    per_device_eval_batch_size: int = field(default=2, metadata={"help": "Images per device for evaluation (2)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save: 'no', 'steps', 'epoch' or 'best'."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept on disk (2)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps (10)."})
    batch_eval_metrics: bool = field(
        default=True,
        metadata={"help": "Score COCO mAP batch by batch during evaluation (nothing accumulates on the device)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Always False: the on-the-fly transform reads the raw columns."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "The label key of the batches (['labels'])."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every trainable DETR parameter gets a gradient (False, as the original)."}
    )
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={"help": "Restore the callbacks' state (the early-stopping count) on resume (True)."},
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off), as "
            "scripts/train.py: both are evaluated (eval_model_*, eval_ema_*); eval_* and best/ and last/ are the "
            "EMA's when it scores higher on --metric_for_best_model."
        },
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={
            "help": "Stop after this many evaluations without improving --metric_for_best_model by more than "
            "--early_stopping_threshold (transformers' EarlyStoppingCallback; 0: never)."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "How much the metric must improve to reset the early-stopping count."}
    )

    def __post_init__(self) -> None:
        if self.remove_unused_columns:
            logger.warning("remove_unused_columns=True would drop the columns the image transform reads; using False.")
            self.remove_unused_columns = False
        if self.lr_backbone < 0 or self.lr_drop < 0:
            raise ValueError(f"--lr_backbone and --lr_drop must be >= 0; got {self.lr_backbone} and {self.lr_drop}.")
        check_ema_decay(self.ema_decay)
        if self.early_stopping_patience < 0 or self.early_stopping_threshold < 0:
            raise ValueError("--early_stopping_patience and --early_stopping_threshold must be >= 0")
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("--early_stopping_patience needs evaluations: --eval_strategy steps or epoch")
        if self.label_smoothing_factor:
            raise ValueError(
                "--label_smoothing_factor is not supported: DETR's class loss is the set criterion's cross-entropy "
                "over matched queries (no-object weighted), which the Trainer's label smoother cannot reach."
            )
        if not self.use_cpu and needs_cpu_process_group():
            self.use_cpu = True
        if self.bf16 and not self.use_cpu and not has_accelerator():
            logger.warning("--bf16 without a GPU: training on the CPU with bfloat16 autocast (as --use_cpu).")
            self.use_cpu = True
        super().__post_init__()


class DetrTrainer(Trainer):
    """`Trainer` for DETR: backbone parameter group, StepLR, fixed-shape evaluation outputs, our model card.

    Args:
        dataset_name: The training data as the user named it (for the model card).
        base_model: The checkpoint fine-tuned from, if any (for the model card).
        *args, **kwargs: As for `Trainer`; `args` must be a `DetrTrainerArguments`.
    """

    def __init__(
        self,
        *args: Any,
        dataset_name: str = "synthetic",
        base_model: str | None = None,
        run_id: str = "",
        **kwargs: Any,
    ):
        self.dataset_name = dataset_name
        self.base_model = base_model
        self.run_id = run_id
        self.ema: ModelEma | None = None  # set by `train_with_trainer` with --ema_decay
        self.loss_meter = LossMeter()
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The Trainer's loss, keeping every term of the training batches for `log`."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training and getattr(outputs, "loss_dict", None) is not None:
            self.loss_meter.update(outputs.loss, outputs.loss_dict)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the mean of each loss term since the last log (aux terms summed per kind) to training logs."""
        if "loss" in logs and self.loss_meter.count:
            means = self.accelerator.reduce(self.loss_meter.means(), reduction="mean")
            logs.update({name: round(value.item(), 4) for name, value in means.items() if name != "loss"})
            self.loss_meter.reset()
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The `--optim` optimizer (AdamW by default) over `build_param_groups`: the backbone at `lr_backbone`."""
        if self.optimizer is None:
            model = self.model if model is None else model
            groups = build_param_groups(model, self.args.learning_rate, self.args.lr_backbone, self.args.weight_decay)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """StepLR at `lr_drop` epochs for the default 'constant' schedule; the Trainer's schedule otherwise."""
        is_constant = SchedulerType(self.args.lr_scheduler_type) == SchedulerType.CONSTANT
        if self.lr_scheduler is None and is_constant and self.args.lr_drop:
            optimizer = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = build_lr_scheduler(optimizer, self.args.lr_drop * self._update_steps_per_epoch())
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def _update_steps_per_epoch(self) -> int:
        """Optimizer steps per epoch, as the Trainer counts them (batches per process / accumulation steps)."""
        batches = math.ceil(len(self.train_dataset) / self.args.train_batch_size)
        if self.args.dataloader_drop_last:
            batches = len(self.train_dataset) // self.args.train_batch_size
        per_process = math.ceil(batches / max(self.args.world_size, 1))
        return max(math.ceil(per_process / self.args.gradient_accumulation_steps), 1)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Loss, `(logits (B, Q, C+1), pred_boxes (B, Q, 4))` and `(image_ids (B,), orig_sizes (B, 2))`.

        Only fixed-shape tensors leave this step, so the Trainer can gather them across processes; the
        variable-length `labels` stay here (they only feed the loss).
        """
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs.get("pixel_mask"), labels=labels)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only or labels is None:
            return loss, None, None
        device = outputs.logits.device
        image_ids = torch.cat([target["image_id"].reshape(1) for target in labels]).to(device)  # (B,)
        orig_sizes = torch.stack([target["orig_size"] for target in labels]).to(device)  # (B, 2)
        return loss, (outputs.logits.detach(), outputs.pred_boxes.detach()), (image_ids, orig_sizes)

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """The Trainer's; with an EMA, the weights and their EMA are both evaluated (`<prefix>_model_*`,
        `<prefix>_ema_*`) and `<prefix>_*` are those of the one scoring strictly higher on
        `--metric_for_best_model` (ties keep the weights), `<prefix>_ema_used` 1.0 when it is the EMA."""
        run = super().evaluation_loop
        output = run(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.ema is None:
            return output
        with self.ema.applied_to(self.accelerator.unwrap_model(self.model)):
            ema_output = run(dataloader, f"{description} (EMA)", prediction_loss_only, ignore_keys, metric_key_prefix)
        key = self.args.metric_for_best_model or "AP"
        key = key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}"
        use_ema = is_better(ema_output.metrics[key], output.metrics[key], bool(self.args.greater_is_better))
        chosen = ema_output if use_ema else output
        metrics = dict(chosen.metrics)
        for kind, source in (("model", output), ("ema", ema_output)):
            prefix = f"{metric_key_prefix}_"
            metrics.update({f"{prefix}{kind}_{k[len(prefix) :]}": v for k, v in source.metrics.items()})
        metrics[f"{metric_key_prefix}_ema_used"] = float(use_ema)
        return EvalLoopOutput(chosen.predictions, chosen.label_ids, metrics, chosen.num_samples)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's (checkpoints included); a failed write is one `OutputWriteError` on every process."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # their saves are collective: left to the Trainer
            return super().save_model(output_dir, _internal_call)
        save = super().save_model
        target = Path(output_dir or self.args.output_dir)
        write_on_every_process(self.accelerator, lambda: save(output_dir, _internal_call), target)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, then a completion marker; rotation removes only this run's older checkpoints.

        With `--ema_decay`, the EMA of the weights (`ema_state.pt`) is part of it. The marker
        (`training_progress.json`: step, run id, every file's size) is written after every process has
        finished writing, so `--resume_from_checkpoint latest` can tell a complete checkpoint from one a kill or a
        full disk cut short (or one truncated later) and skip it. Rotation runs after the marker, so a kill never
        leaves fewer complete checkpoints than `--save_total_limit`, and never touches another run's folders.

        Raises:
            OutputWriteError: disk full or no permission while writing any part (weights, optimizer, RNG states),
                on every process, naming the checkpoint; the previous checkpoints are untouched.
        """
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # the Trainer's rotation (by mtime, every run's folders) is replaced below
        save = super()._save_checkpoint
        try:
            write_on_every_process(self.accelerator, lambda: save(model, trial), folder)
        finally:
            self.args.save_total_limit = limit

        def complete() -> None:
            if self.args.should_save:
                if self.ema is not None:  # part of the checkpoint: written before the marker that lists its size
                    save_ema_state(self.ema, folder)
                mark_complete(folder, TrainingProgress(step=self.state.global_step, run_id=self.run_id))
                if limit:
                    remove_old_checkpoints(folder.parent, limit, self.run_id, self.state.best_model_checkpoint)

        write_on_every_process(self.accelerator, complete, folder)

    def save_model_folder(self, folder: Path, metrics: dict[str, float] | None, use_ema: bool = False) -> Path:
        """Write a complete Hub folder next to `folder` and swap it in whole (as `train.py` writes best/ and last/).

        `use_ema`: save the EMA of the weights instead of the weights.

        Raises:
            OutputWriteError: disk full or no permission, naming the folder (the previous `folder` is untouched).
        """

        def write() -> None:
            if self.is_world_process_zero():
                tmp = temporary_sibling(folder)
                model = self.accelerator.unwrap_model(self.model)
                with self.ema.applied_to(model) if use_ema and self.ema else nullcontext():
                    self._save(str(tmp))  # weights, config with auto_map, processor, source files
                self.create_model_card(folder=tmp, metrics=metrics)
                if metrics:
                    (tmp / "eval_results.json").write_text(json.dumps(metrics_for_json(metrics), indent=2))
                replace_folder(tmp, folder)

        self.accelerator.wait_for_everyone()
        write_on_every_process(self.accelerator, write, folder)
        return folder

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """The Trainer's comparison (strictly better; its score survives a resume), saving `best/` on a new best."""
        is_new_best = super()._determine_best_metric(metrics, trial)
        if is_new_best:
            best = Path(self.args.output_dir) / "best"
            self.save_model_folder(best, _coco_metrics(metrics), use_ema=bool(metrics.get("eval_ema_used")))
        return is_new_best

    def create_model_card(
        self, folder: Path | None = None, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        """Writes our model card (YAML metadata, labels, metrics, hyper-parameters, usage) as `README.md`."""
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        card = render_model_card(
            repo_id=self._repo_name(),
            dataset=self.dataset_name,
            id2label=model.config.id2label,
            hyperparameters=_hyperparameters(self.args),
            metrics=metrics if metrics is not None else self.last_eval_metrics(),
            base_model=self.base_model,
        )
        (Path(folder or self.args.output_dir) / "README.md").write_text(card)

    def last_eval_metrics(self) -> dict[str, float] | None:
        """The metrics of the latest evaluation in the log history, without the `eval_` prefix."""
        for entry in reversed(self.state.log_history):
            if "eval_AP" in entry:
                return {key[len("eval_") :]: value for key, value in entry.items() if key.startswith("eval_")}
        return None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """The Trainer's, failing with a one-line `HubUploadError` (no token, no network) before training."""
        with hub_errors(self._repo_name(), token or self.args.hub_token):
            super().init_hf_repo(token=token, private=private)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """Uploads `output_dir/last` (as `train.py` does), with one-line `HubUploadError`s."""
        token = kwargs.get("token") or self.args.hub_token
        last = Path(self.args.output_dir) / "last"
        return push_folder_to_hub(last, self._repo_name(), token=token, private=bool(self.args.hub_private_repo))

    def _repo_name(self) -> str:
        """The Hub repository: as created (`owner/name`), else as asked for, else the output folder's name."""
        return (
            getattr(self, "hub_model_id", None) or self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        )


@dataclass
class TrainerRunResult:
    """What a finished `train_with_trainer` run leaves behind: `last/`, and `best/` when an evaluation ran."""

    output_dir: Path
    metrics: dict[str, float]
    steps: int
    last_model_dir: Path | None = None
    best_model_dir: Path | None = None


def train_with_trainer(data_args: DetrDataArguments, args: DetrTrainerArguments) -> TrainerRunResult:
    """Train, evaluate, save `best/` and `last/` Hub folders in `args.output_dir` (push `last/` with `--push_to_hub`).

    Raises:
        ValueError: `output_dir` holds another run (without `--resume_from_checkpoint`/`--overwrite_output_dir`).
        OutputWriteError: `output_dir` cannot be written, before any training, or a save failed (naming the folder).
    """
    check_output_dir(args)  # every process sees the same folder before any of them writes into it
    checkpoint, run_id = resume_point(args)
    set_seed(args.seed)  # identical initial weights on every process
    train_split, eval_split = _load_splits(data_args, args)
    freeze = data_args.freeze_backbone or args.lr_backbone == 0
    model, base_model = load_model_for_training(data_args.model, train_split.mapping, freeze_backbone=freeze)
    model.config.auxiliary_loss = True  # the original trains with a loss on every decoder layer
    if PartialState().is_main_process:
        warning = free_space_check(args.output_dir, model)  # the same estimate as train.py's
        if warning:
            print(warning)
    trainer = DetrTrainer(
        model=model,
        args=args,
        train_dataset=train_split.dataset,
        eval_dataset=eval_split.dataset,
        data_collator=train_split.collate_fn,
        processing_class=train_split.processor,
        compute_metrics=CocoMetrics(eval_split),
        callbacks=[SetEpochCallback(train_split)],
        dataset_name=data_args.data,
        base_model=base_model,
        run_id=run_id,
    )
    if trainer.is_world_process_zero():  # the folder belongs to this run once its setup has succeeded
        write_run_file(args, run_id, arguments=args.to_dict())
    _add_ema_and_early_stopping(trainer, args, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = _final_metrics(trainer)
    output_dir = Path(args.output_dir)
    use_ema = bool(metrics.get("eval_ema_used"))
    last_dir = trainer.save_model_folder(output_dir / "last", _coco_metrics(metrics), use_ema=use_ema)
    best_dir = output_dir / "best" if (output_dir / "best").is_dir() else None
    metrics = _coco_metrics(metrics)
    if trainer.is_world_process_zero():
        for split in (train_split, eval_split):
            if split.report():
                print(split.report())
    if args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    trainer.end()  # trackers finished, process group destroyed
    return TrainerRunResult(output_dir, metrics, trainer.state.global_step, last_dir, best_dir)


def _add_ema_and_early_stopping(trainer: DetrTrainer, args: DetrTrainerArguments, checkpoint: str | None) -> None:
    """With --ema_decay, the EMA (continued from the checkpoint resumed from) and its callback; with
    --early_stopping_patience, the early-stopping callback."""
    if args.ema_decay > 0:
        trainer.ema = ModelEma(trainer.accelerator.unwrap_model(trainer.model), args.ema_decay)
        if checkpoint:  # the one `_resume_point` chose
            load_ema_state(trainer.ema, checkpoint)
        trainer.add_callback(EmaCallback(trainer.ema))
    if args.early_stopping_patience > 0:
        trainer.add_callback(DetrEarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))


def _load_splits(data_args: DetrDataArguments, args: DetrTrainerArguments) -> tuple[DetectionSplit, DetectionSplit]:
    with args.main_process_first(desc="loading the data"):  # the synthetic data set is generated once
        train_split = load_detection_split(
            data_args.data, data_args.train_split, image_size=data_args.image_size, train=True,
            processor=checkpoint_processor(data_args.model, data_args.image_size),
            augment=data_args.augment, hflip=not data_args.no_hflip, on_error=data_args.on_bad_data, seed=args.seed,
        )  # fmt: skip
        eval_split = load_detection_split(
            data_args.data, data_args.eval_split, processor=train_split.processor, mapping=train_split.mapping,
            on_error=data_args.on_bad_data, seed=args.seed,
        )  # fmt: skip
    return train_split, eval_split


def _final_metrics(trainer: DetrTrainer) -> dict[str, float]:
    """The evaluation of the final weights: reused when the last evaluation ran at the last step.

    A new evaluation competes for `best/` as the Trainer's own evaluations do (the Accelerate script does the same).
    """
    for entry in reversed(trainer.state.log_history):
        if "eval_AP" in entry:
            if entry.get("step") == trainer.state.global_step:
                return {key: value for key, value in entry.items() if key.startswith("eval_")}
            break
    metrics = trainer.evaluate()
    trainer._determine_best_metric(metrics, None)
    return metrics


def _coco_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The COCO keys of an evaluation, without `eval_`: the same file, with the same keys, as `train.py` writes.

    The Trainer's logs hold flat scalars without pycocotools' -1 (`CocoMetrics`); the missing ones are -1 again
    and `eval_per_class/<name>/<metric>` becomes `per_class` as `CocoEvaluator.compute` returns it.
    """
    result: dict[str, Any] = {name: metrics.get(f"eval_{name}", -1.0) for name in (*METRIC_NAMES, DUPLICATE_RATE)}
    per_class: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("eval_per_class/"):
            name, metric = key.removeprefix("eval_per_class/").rsplit("/", 1)
            per_class.setdefault(name, {})[metric] = value
    if per_class:
        result["per_class"] = {
            name: {**dict.fromkeys(PER_CLASS_METRIC_NAMES, -1.0), **values} for name, values in per_class.items()
        }
    return result


def _hyperparameters(args: DetrTrainerArguments) -> dict[str, Any]:
    names = (
        "learning_rate", "lr_backbone", "weight_decay", "max_grad_norm", "lr_scheduler_type", "lr_drop",
        "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "seed",
        "ema_decay",
    )  # fmt: skip
    values = {name: getattr(args, name) for name in names}
    return {
        name: value if isinstance(value, (int, float)) else str(getattr(value, "value", value))
        for name, value in values.items()
    }
