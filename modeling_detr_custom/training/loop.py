"""The Accelerate training loop behind `scripts/train.py`: one process, many GPUs, or CPU processes."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_detr_custom.data import DetectionSplit, load_detection_split
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator, format_metrics_table, metrics_for_trackers
from modeling_detr_custom.evaluation.loop import evaluate_model
from modeling_detr_custom.evaluation.panoptic_quality import PANOPTIC_METRIC_NAMES, format_panoptic_table
from modeling_detr_custom.evaluation.segmentation_loop import evaluate_segmentation_model
from modeling_detr_custom.training.arguments import DetrTrainingArguments
from modeling_detr_custom.training.atomic_folders import replace_folder, temporary_sibling, write_on_every_process
from modeling_detr_custom.training.checkpointing import (
    TrainingProgress,
    is_checkpoint_of,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from modeling_detr_custom.training.distributed import has_accelerator, make_accelerator
from modeling_detr_custom.training.ema import ModelEma
from modeling_detr_custom.training.hub import check_hub_token, push_folder_to_hub, save_hub_checkpoint
from modeling_detr_custom.training.logging_utils import LossMeter, progress_interval
from modeling_detr_custom.training.model_selection import early_stopping_counter, is_better, metric_value
from modeling_detr_custom.training.models import checkpoint_processor, load_model_for_training
from modeling_detr_custom.training.optim import build_lr_scheduler, build_optimizer
from modeling_detr_custom.training.run_state import (
    check_output_dir,
    free_space_check,
    resolve_resume_arguments,
    write_run_file,
)

__all__ = ["NonFiniteLossError", "TrainResult", "check_finite_loss", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; raised before the optimizer step so no weight is corrupted."""


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    last_model_dir: Path
    best_model_dir: Path | None
    metrics: dict[str, float] | None
    best_metrics: dict[str, float] | None
    steps: int


@dataclass
class _Run:
    """Everything the loop needs, prepared by Accelerate."""

    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    train: DetectionSplit
    eval: DetectionSplit
    steps_per_epoch: int
    max_steps: int
    ema: ModelEma | None = None


def train(args: DetrTrainingArguments, given: set[str] | None = None) -> TrainResult:
    """Train, evaluate and save as `args` says; returns where the models went and their metrics.

    Args:
        args: the arguments; with `resume_from_checkpoint`, the resumed run's saved arguments fill in every field
            not in `given`.
        given: names of the flags the user wrote (`run_state.flags_given`); None: the fields that differ from
            their defaults.
    """
    args, run_id = resolve_resume_arguments(args, given)
    if args.push_to_hub:
        check_hub_token(prefix="--push_to_hub (checked before training): ")
    check_output_dir(args)
    run = _setup(args)
    accelerator = run.accelerator
    progress = _maybe_resume(run, args, run_id)
    progress.run_id = _start_run(run, args, progress.run_id or run_id)
    if progress.step == 0:  # a resumed run continues with the random states its checkpoint restored
        set_seed(args.seed + accelerator.process_index)  # the original: seed + rank
    output_dir = Path(args.output_dir)
    bar = tqdm(
        total=run.max_steps,
        initial=progress.step,
        desc="train",
        disable=not accelerator.is_main_process,
        mininterval=progress_interval(),
    )
    meter = LossMeter()
    while progress.step < run.max_steps and not _should_stop(args, progress):
        if _train_epoch(run, args, progress, bar, meter):
            _evaluate_and_save(run, args, progress, epoch_end=True)
    bar.close()
    if _should_stop(args, progress):
        accelerator.print(
            f"Early stopping at step {progress.step}: {args.metric_for_best_model} did not improve by more than "
            f"{args.early_stopping_threshold} in {progress.evaluations_without_improvement} evaluations."
        )
    if progress.metrics_step != progress.step:
        _evaluate(run, args, progress)
    if not is_checkpoint_of(Path(args.output_dir) / f"checkpoint-{progress.step}", progress.run_id):
        save_checkpoint(accelerator, args.output_dir, progress, keep=args.save_total_limit)
    last_dir = _save_model(run, args, output_dir / "last", progress.metrics, progress.weights)
    best_dir = output_dir / "best" if (output_dir / "best").is_dir() else None
    if accelerator.is_main_process:
        _report_skipped(run)
        if args.push_to_hub:
            push_folder_to_hub(last_dir, args.hub_model_id or output_dir.name, private=args.hub_private_repo)
    accelerator.end_training()
    return TrainResult(output_dir, last_dir, best_dir, progress.metrics, progress.best_metrics, progress.step)


def _start_run(run: _Run, args: DetrTrainingArguments, run_id: str | None) -> str:
    """Write the run file (main process) and return the run id every process agrees on."""
    from accelerate.utils import broadcast_object_list

    accelerator = run.accelerator
    box = [run_id]
    if accelerator.is_main_process:
        box = [write_run_file(args, run_id)]
        warning = free_space_check(args.output_dir, accelerator.unwrap_model(run.model))
        if warning:
            accelerator.print(warning)
    broadcast_object_list(box, from_process=0)
    return box[0]


def _setup(args: DetrTrainingArguments) -> _Run:
    if args.mixed_precision == "fp16" and not has_accelerator():
        raise ValueError(
            "--mixed_precision fp16 needs a GPU: on the CPU, Accelerate would train in float32 without saying so. "
            "Use --mixed_precision bf16 (CPU autocast) or no."
        )
    accelerator = make_accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/runs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    accelerator.print(training_banner(accelerator, args))
    set_seed(args.seed)  # identical initial weights on every process
    with accelerator.main_process_first():  # the synthetic data set is generated once
        train_split, eval_split = _load_splits(args)
    freeze = args.freeze_backbone or args.lr_backbone == 0
    model, _ = load_model_for_training(
        args.model, train_split.mapping, freeze_backbone=freeze, task=args.task, freeze_detector=args.freeze_detector
    )
    optimizer = build_optimizer(model, args.learning_rate, args.lr_backbone, args.weight_decay)
    train_loader = DataLoader(
        train_split.dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=train_split.collate_fn,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = DataLoader(
        eval_split.dataset,
        batch_size=args.per_device_eval_batch_size,
        collate_fn=eval_split.collate_fn,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator(),  # evaluating must not consume the training random stream
    )
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = max(math.ceil(len(train_loader) / args.gradient_accumulation_steps), 1)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # Not passed to `prepare`: Accelerate would step it once per process; it counts optimizer steps.
    scheduler = build_lr_scheduler(
        optimizer,
        args.lr_drop_step(steps_per_epoch),
        warmup_steps=args.num_warmup_steps(max_steps),
        scheduler_type=args.lr_scheduler_type,
        num_training_steps=max_steps,
    )
    accelerator.register_for_checkpointing(scheduler)
    ema = None
    if args.ema_decay > 0:
        ema = ModelEma(accelerator.unwrap_model(model), args.ema_decay)
        accelerator.register_for_checkpointing(ema)
    if args.report_to != "none":
        accelerator.init_trackers("detr-custom", config=_hparams(args))
    return _Run(
        accelerator, model, optimizer, scheduler, train_loader, eval_loader,
        train_split, eval_split, steps_per_epoch, max_steps, ema,
    )  # fmt: skip


def training_banner(accelerator: Accelerator, args: DetrTrainingArguments) -> str:
    """What one optimizer step sees: processes, images per batch, accumulated batches, images per step."""
    processes, batch = accelerator.num_processes, args.per_device_train_batch_size
    accumulation = args.gradient_accumulation_steps
    line = (
        f"Training on {processes} process(es) ({accelerator.distributed_type.value}, {accelerator.device}), "
        f"{batch} images per process per batch"
    )
    if accumulation > 1:
        line += f", {accumulation} batches accumulated"
    return f"{line}: {processes * batch * accumulation} images per optimizer step."


def _load_splits(args: DetrTrainingArguments) -> tuple[DetectionSplit, DetectionSplit]:
    common = {"image_size": args.image_size, "on_error": args.on_bad_data, "seed": args.seed, "task": args.task}
    common["processor"] = checkpoint_processor(args.model, args.image_size)
    train_split = load_detection_split(
        args.data, args.train_split, train=True, augment=args.augment, hflip=not args.no_hflip, **common
    )
    eval_split = load_detection_split(args.data, args.eval_split, train=False, mapping=train_split.mapping, **common)
    for option, split in (("--train_split", train_split), ("--eval_split", eval_split)):
        if len(split.dataset) == 0:
            skipped = " after skipping bad data (--on_bad_data skip)" if args.on_bad_data == "skip" else ""
            raise ValueError(f"{option} {getattr(args, option[2:])!r} of {args.data} has no images{skipped}.")
    return train_split, eval_split


def _maybe_resume(run: _Run, args: DetrTrainingArguments, run_id: str | None) -> TrainingProgress:
    """The progress of the checkpoint resumed from (best score, last evaluation included), or a fresh one."""
    if not args.resume_from_checkpoint:
        return TrainingProgress()
    path = args.resume_from_checkpoint
    if path == "latest":
        found = load_latest_checkpoint(run.accelerator, args.output_dir, run_id)
        if found is None:
            run.accelerator.print(f"No complete checkpoint in {args.output_dir}; starting from scratch.")
            return TrainingProgress()
        path, progress = found
    else:
        progress = load_checkpoint(run.accelerator, path)
    if Path(path).parent.resolve() != Path(args.output_dir).resolve():
        progress.run_id = ""  # continuing another folder's checkpoint: a new run in this folder
    run.accelerator.print(f"Resumed from {path} at step {progress.step} (epoch {progress.epoch}).")
    return progress


def _train_epoch(
    run: _Run, args: DetrTrainingArguments, progress: TrainingProgress, bar: tqdm, meter: LossMeter
) -> bool:
    """Train until the end of the epoch or `max_steps`; True when the epoch ran to its end."""
    accelerator, model = run.accelerator, run.model
    model.train()
    run.train_loader.set_epoch(progress.epoch)
    run.train.set_epoch(progress.epoch)
    loader = run.train_loader
    if progress.batch_in_epoch:
        loader = accelerator.skip_first_batches(loader, progress.batch_in_epoch)
    for batch in loader:
        with accelerator.accumulate(model):
            outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], labels=batch["labels"])
            check_finite_loss(outputs.loss, outputs.loss_dict, batch["labels"], progress.step + 1)
            accelerator.backward(outputs.loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
        progress.batch_in_epoch += 1
        meter.update(outputs.loss, outputs.loss_dict)
        if accelerator.sync_gradients:
            run.scheduler.step()
            if run.ema is not None:
                run.ema.update(accelerator.unwrap_model(model))
            progress.step += 1
            _after_step(run, args, progress, bar, meter)
            if progress.step >= run.max_steps or _should_stop(args, progress):
                return False
    progress.epoch += 1
    progress.batch_in_epoch = 0
    return True


def _after_step(
    run: _Run, args: DetrTrainingArguments, progress: TrainingProgress, bar: tqdm, meter: LossMeter
) -> None:
    lr = run.optimizer.param_groups[0]["lr"]
    if progress.step % args.logging_steps == 0 or progress.step == run.max_steps:
        means = {k: v.item() for k, v in run.accelerator.reduce(meter.means(), reduction="mean").items()}
        run.accelerator.log({**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr}, step=progress.step)
        bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.1e}", refresh=False)
        meter.reset()
    bar.update(1)
    if progress.step < run.max_steps:
        _evaluate_and_save(run, args, progress, epoch_end=False)


def _evaluate_and_save(run: _Run, args: DetrTrainingArguments, progress: TrainingProgress, epoch_end: bool) -> None:
    """Evaluate and/or write a resumable checkpoint when `--eval_strategy`/`--save_steps` say so."""
    eval_due = {
        "no": False,
        "epoch": epoch_end,
        "steps": not epoch_end and progress.step % max(args.eval_steps, 1) == 0,
    }[args.eval_strategy]
    if eval_due:
        _evaluate(run, args, progress)
    if epoch_end if args.save_steps == 0 else (not epoch_end and progress.step % args.save_steps == 0):
        save_checkpoint(run.accelerator, args.output_dir, progress, keep=args.save_total_limit)


def _should_stop(args: DetrTrainingArguments, progress: TrainingProgress) -> bool:
    patience = args.early_stopping_patience
    return patience > 0 and progress.evaluations_without_improvement >= patience


def _evaluate(run: _Run, args: DetrTrainingArguments, progress: TrainingProgress) -> None:
    """COCO-evaluate the weights (and their EMA), print and log the tables, save `best/` on a new best, and count
    the evaluations without improvement (early stopping).

    With `--ema_decay`, the EMA is chosen when it scores strictly higher on `--metric_for_best_model` than the
    weights themselves (ties keep the trained weights); the chosen one's metrics are `eval/*` and compete for `best/`.
    """
    accelerator = run.accelerator
    kind = {"detection": "COCO bbox", "panoptic": "COCO bbox and panoptic quality", "instance": "COCO bbox and segm"}
    header = f"\nstep {progress.step} (epoch {progress.epoch}) {kind[args.task]} on '{args.eval_split}'"
    metrics, weights = _score(run), "model"
    accelerator.log(metrics_for_trackers(metrics, "eval_model/"), step=progress.step)
    accelerator.print(f"{header}{', the weights' if run.ema else ''}:")
    accelerator.print(_metrics_table(metrics))
    if run.ema is not None:
        with run.ema.applied_to(accelerator.unwrap_model(run.model)):
            ema_metrics = _score(run)
        accelerator.log(metrics_for_trackers(ema_metrics, "eval_ema/"), step=progress.step)
        accelerator.print(f"{header}, their EMA (decay {args.ema_decay}):")
        accelerator.print(_metrics_table(ema_metrics))
        name = args.metric_for_best_model
        if is_better(metric_value(ema_metrics, name), metric_value(metrics, name), args.greater_is_better):
            metrics, weights = ema_metrics, "ema"
        accelerator.print(f"Kept: {'the EMA' if weights == 'ema' else 'the weights'} (better {name}).")
    accelerator.log(metrics_for_trackers(metrics, "eval/"), step=progress.step)  # -1 (no such objects) left out
    progress.metrics, progress.metrics_step, progress.weights = metrics, progress.step, weights
    score = metric_value(metrics, args.metric_for_best_model)
    best = None if progress.best_metrics is None else metric_value(progress.best_metrics, args.metric_for_best_model)
    progress.evaluations_without_improvement = early_stopping_counter(
        progress.evaluations_without_improvement, score, best, args.greater_is_better, args.early_stopping_threshold
    )
    if is_better(score, best, args.greater_is_better):  # ties keep the earlier model
        progress.best_metrics, progress.best_step, progress.best_weights = metrics, progress.step, weights
        _save_model(run, args, Path(args.output_dir) / "best", metrics, weights)


def _metrics_table(metrics: dict[str, Any]) -> str:
    """The COCO table (bbox, and the mask AP of instance segmentation), then the panoptic quality if evaluated."""
    if "PQ" not in metrics:
        return format_metrics_table(metrics)
    coco = {name: value for name, value in metrics.items() if name not in PANOPTIC_METRIC_NAMES}
    return f"{format_metrics_table(coco)}\n\n{format_panoptic_table(metrics, 'panoptic_per_class')}"


def _score(run: _Run) -> dict[str, float]:
    """The evaluation metrics of the model's current weights on the evaluation split, the same on every process:
    COCO bbox, plus panoptic quality or mask AP for segmentation (`evaluate_segmentation_model`)."""
    if run.eval.task != "detection":
        metrics = evaluate_segmentation_model(run.model, run.eval_loader, run.eval, run.accelerator)
        return _broadcast(run.accelerator, metrics)
    evaluator = CocoEvaluator(run.eval.coco, run.eval.mapping)
    metrics = evaluate_model(
        run.model, run.eval_loader, run.eval.processor, evaluator, run.eval.mapping, run.accelerator
    )
    return _broadcast(run.accelerator, metrics)


def _broadcast(accelerator: Accelerator, metrics: dict[str, float] | None) -> dict[str, float]:
    from accelerate.utils import broadcast_object_list

    box = [metrics]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _save_model(
    run: _Run, args: DetrTrainingArguments, folder: Path, metrics: dict | None, weights: str = "model"
) -> Path:
    """Write a Hub folder next to `folder` and swap it in whole: the previous one stays until this one is complete.

    `weights`: "ema" saves the moving average of the weights instead of the weights themselves.

    Raises:
        OutputWriteError: disk full or no permission, naming the folder (the previous `folder` is untouched).
    """
    accelerator = run.accelerator

    def write() -> None:
        if accelerator.is_main_process:
            tmp = temporary_sibling(folder)
            model = accelerator.unwrap_model(run.model)
            with run.ema.applied_to(model) if weights == "ema" else nullcontext():
                _write_hub_folder(run, args, model, tmp, metrics, _card_repo_id(args, folder))
            replace_folder(tmp, folder)

    accelerator.wait_for_everyone()
    write_on_every_process(accelerator, write, folder)
    return folder


def _card_repo_id(args: DetrTrainingArguments, folder: Path) -> str:
    """What the model card's usage snippet loads: the repository `--push_to_hub` uploads to, else the folder."""
    if args.hub_model_id or args.push_to_hub:
        return args.hub_model_id or Path(args.output_dir).name
    return str(folder)


def _write_hub_folder(run: _Run, args: DetrTrainingArguments, model: Any, tmp: Path, metrics: Any, name: str) -> None:
    save_hub_checkpoint(
        model,
        run.train.processor,
        tmp,
        dataset=args.data,
        hyperparameters=_hparams(args),
        metrics=metrics,
        repo_id=name,
    )


def check_finite_loss(loss: torch.Tensor, loss_dict: dict, labels: list[dict], step: int) -> None:
    """Raise `NonFiniteLossError` naming the terms and the batch's image ids when the loss is NaN or inf.

    Called before `backward`, so a bad batch never reaches the weights.
    """
    if torch.isfinite(loss).all():
        return
    bad = sorted(k for k, v in loss_dict.items() if not torch.isfinite(v).all())
    image_ids = [int(t["image_id"]) for t in labels if "image_id" in t]
    raise NonFiniteLossError(
        f"Non-finite loss at step {step} (terms: {', '.join(bad) or 'loss'}) on the batch with "
        f"image ids {image_ids}. The step was not applied. Lower --learning_rate, check these images' "
        "annotations, or use --mixed_precision no."
    )


def _report_skipped(run: _Run) -> None:
    for split in (run.train, run.eval):
        report = split.report()
        if report:
            run.accelerator.print(report)


def _hparams(args: DetrTrainingArguments) -> dict[str, Any]:
    return {k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))}
