"""Command-line arguments of the training scripts, named as transformers' `TrainingArguments` names them.

`DetrDataArguments` (what to train on, which model, how to treat bad data) is shared by `scripts/train.py`
(`DetrTrainingArguments` extends it) and `scripts/train_trainer.py` (parsed next to `DetrTrainerArguments`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modeling_detr_custom.data.masks import check_task
from modeling_detr_custom.data.records import check_bad_data_policy
from modeling_detr_custom.training.ema import check_ema_decay
from modeling_detr_custom.training.model_selection import check_metric_name

AUGMENTATIONS = ("detr", "light", "none")  # load_detection_split's named augmentations
LR_SCHEDULER_TYPES = ("step", "cosine", "linear", "constant", "constant_with_warmup")
DEFAULT_METRIC_FOR_BEST_MODEL = {"detection": "AP", "panoptic": "PQ", "instance": "segm_AP"}

__all__ = ["LR_SCHEDULER_TYPES", "ON_BAD_DATA_HELP", "DetrDataArguments", "DetrTrainingArguments"]

ON_BAD_DATA_HELP = (
    "'raise' stops at the first unreadable image or bad annotation, naming the file and annotation; 'skip' warns, "
    "skips it and reports the count at the end."
)


@dataclass
class DetrDataArguments:
    """What to train on and which model: the part both training scripts share."""

    data: str = field(
        default="synthetic",
        metadata={
            "help": "What to train on, found by its layout: a COCO folder (annotations/instances_<split>.json + "
            "<split>/ images), a Roboflow COCO export (<split>/_annotations.coco.json), a YOLO folder (data.yaml or "
            "classes.txt, images/ + labels/), a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/), a "
            "folder or Hub name that `datasets.load_dataset` opens (columns image, image_id, objects), or "
            "'synthetic' (the built-in shapes data set, generated on first use)."
        },
    )
    model: str = field(
        default="detr-tiny",
        metadata={
            "help": "Model to train: a checkpoint folder or Hub id to fine-tune from (the class head is "
            "re-initialised when the number of classes differs), a config.json to build a fresh model from, or a "
            "named configuration: 'detr-resnet-50', 'detr-resnet-101' (the original architectures), 'detr-tiny' "
            "(small, from scratch on a CPU), 'detr-tiny-refine' (+ iterative box refinement), 'detr-tiny-demo' "
            "(what `make demo` trains: + one box per object; see docs/demo_measurements.md)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str = field(default="val", metadata={"help": "Split used for evaluation."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Shortest edge for evaluation and the largest training scale. Default: 800 for real data, "
            "the data set's own size for synthetic data."
        },
    )
    augment: str = field(
        default="detr",
        metadata={
            "help": "Training augmentation: 'detr' (the original recipe: flip, multi-scale resize, random crop, scaled "
            "to --image_size), 'light' (flip and a mild multi-scale resize, no crop: small data sets, fine-tuning), "
            "or 'none'. From Python, load_detection_split(augment=...) also takes any callable or an albumentations "
            "Compose with bbox_params."
        },
    )
    no_hflip: bool = field(
        default=False,
        metadata={
            "help": "Leave the horizontal flip out of the augmentation (orientation-sensitive data: text, arrows, "
            "left/right classes)."
        },
    )
    no_augment: bool = field(
        default=False,
        metadata={"help": "The same as --augment none (kept for existing commands)."},
    )
    on_bad_data: str = field(default="raise", metadata={"help": ON_BAD_DATA_HELP})
    freeze_backbone: bool = field(
        default=False,
        metadata={
            "help": "Freeze the whole backbone: its weights and its BatchNorm statistics (--lr_backbone 0 freezes "
            "it the same way, BatchNorm statistics of a trainable-BatchNorm backbone included)."
        },
    )

    def __post_init__(self) -> None:
        check_bad_data_policy(self.on_bad_data, "--on_bad_data")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.no_augment and self.augment not in ("detr", "none"):
            raise ValueError(f"--no_augment contradicts --augment {self.augment}; give only --augment")
        if self.no_augment:
            self.augment = "none"


@dataclass
class DetrTrainingArguments(DetrDataArguments):
    """Everything `scripts/train.py` accepts. Defaults are the original DETR recipe except where noted."""

    task: str = field(
        default="detection",
        metadata={
            "help": "What to train: 'detection' (DetrCustomForObjectDetection), 'panoptic' (DetrCustomForSegmentation "
            "on a COCO panoptic folder: annotations/panoptic_<split>.json + annotations/panoptic_<split>/*.png + "
            "<split>/ images, things and stuff; evaluated by PQ/SQ/RQ and bbox AP) or 'instance' "
            "(DetrCustomForSegmentation on COCO instances with polygon/RLE segmentation; evaluated by mask AP, "
            "segm_AP..., and bbox AP). 'synthetic' data has both. Segmentation models load with "
            "AutoModelForImageSegmentation and pipeline('image-segmentation')."
        },
    )
    freeze_detector: bool = field(
        default=False,
        metadata={
            "help": "With --task panoptic/instance: train only the mask head (bbox_attention, mask_head) on a "
            "frozen detector whose weights and BatchNorm statistics stay as they are (the original's "
            "--frozen_weights). --model must be a trained detection or segmentation checkpoint with the data's "
            "classes."
        },
    )
    output_dir: str = field(
        default="outputs/detr-custom",
        metadata={"help": "Where checkpoints, the best and the last model (Hub-style folders) and logs go."},
    )
    num_train_epochs: float = field(default=300, metadata={"help": "Number of training epochs."})
    max_steps: int = field(
        default=-1, metadata={"help": "If > 0, total number of optimizer steps; overrides num_train_epochs."}
    )
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Images per device per step."})
    per_device_eval_batch_size: int = field(default=2, metadata={"help": "Images per device for evaluation."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the transformer."})
    lr_backbone: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of the backbone parameters (0 freezes the backbone, as --freeze_backbone)."},
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(
        default="step",
        metadata={
            "help": "Learning-rate schedule after the warmup: 'step' (DETR's: x0.1 after --lr_drop epochs or "
            "--lr_drop_steps steps), or as TrainingArguments: 'cosine', 'linear' (to 0 at the last step), "
            "'constant', 'constant_with_warmup'."
        },
    )
    warmup_steps: float = field(
        default=0,
        metadata={
            "help": "Linear warmup from 0 to the learning rates, as TrainingArguments: an integer number of "
            "optimizer steps, or a float in (0, 1) as a fraction of the total steps."
        },
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata={"help": "Warmup as a fraction of the total optimizer steps (as transformers 4's TrainingArguments)."},
    )
    lr_drop: int = field(
        default=200, metadata={"help": "Epoch after which the learning rates are multiplied by 0.1 (StepLR)."}
    )
    lr_drop_steps: int = field(
        default=0,
        metadata={
            "help": "If > 0, the optimizer step after which the learning rates are multiplied by 0.1; overrides "
            "--lr_drop (for runs measured in --max_steps)."
        },
    )
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping max norm (0 disables)."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Number of batches accumulated before each optimizer step."}
    )
    mixed_precision: str = field(
        default="no",
        metadata={"help": "Mixed precision: 'no', 'fp16' (needs a GPU; refused on the CPU) or 'bf16'."},
    )
    bf16: bool = field(default=False, metadata={"help": "As TrainingArguments: the same as --mixed_precision bf16."})
    fp16: bool = field(default=False, metadata={"help": "As TrainingArguments: the same as --mixed_precision fp16."})
    eval_strategy: str | None = field(
        default=None,
        metadata={
            "help": "When to evaluate during training, as TrainingArguments: 'steps' (every --eval_steps), 'epoch' "
            "or 'no' (the final model is still evaluated once for last/). Default: 'steps' if --eval_steps > 0, "
            "else 'epoch'."
        },
    )
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N optimizer steps (0: at the end of every epoch)."}
    )
    metric_for_best_model: str | None = field(
        default=None,
        metadata={
            "help": "The evaluation metric that picks best/ and drives early stopping: the bbox AP, AP50, AP75, "
            "APs, APm, APl, AR1, AR10, AR100; with --task panoptic also PQ, SQ, RQ and their _th (things) and _st "
            "(stuff) variants; with --task instance also the mask segm_AP, segm_AP50, ... (an eval_ prefix is "
            "accepted). Default: AP (detection), PQ (panoptic), segm_AP (instance). Ties keep the earlier model."
        },
    )
    greater_is_better: bool | None = field(
        default=None,
        metadata={
            "help": "As TrainingArguments: whether a higher metric is better (default: True unless it ends with "
            "'loss')."
        },
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={
            "help": "Stop after this many evaluations in a row without improving --metric_for_best_model by more "
            "than --early_stopping_threshold (0: never; as transformers' EarlyStoppingCallback)."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "How much the metric must improve to reset the early-stopping count."}
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off). Both "
            "the weights and their average are evaluated; best/ and last/ hold the average when it scores higher "
            "on --metric_for_best_model."
        },
    )
    save_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every N optimizer steps (0: every epoch)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Resumable checkpoints kept on disk."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume from a checkpoint folder, or 'latest' for the newest undamaged one in output_dir. The "
            "run's own arguments (training_args.json) are restored: --data and --output_dir are enough; flags given "
            "again must agree with the run's values."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that holds another run (its checkpoints are kept, never resumed or "
            "rotated by this run; best/ and last/ are replaced)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Random seed (each process adds its rank, as the original)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loading worker processes."})
    report_to: str = field(default="tensorboard", metadata={"help": "Where to log: 'tensorboard', 'wandb' or 'none'."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss terms every N optimizer steps."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final model folder to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository for --push_to_hub (default: the output_dir name)."}
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixed_precision not in {"no", "fp16", "bf16"}:
            raise ValueError(f"--mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        self._resolve_precision_flags()
        self._check_schedule()
        self._check_model_selection()
        check_ema_decay(self.ema_decay)
        if self.report_to not in {"tensorboard", "wandb", "none"}:
            raise ValueError(f"--report_to must be 'tensorboard', 'wandb' or 'none', got {self.report_to!r}")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_total_limit",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_steps", "save_steps", "dataloader_num_workers", "max_grad_norm", "lr_backbone"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("Give a positive --num_train_epochs or --max_steps")
        if self.lr_drop_steps < 0:
            raise ValueError(f"--lr_drop_steps must be >= 0 (0: use --lr_drop), got {self.lr_drop_steps}")

    def _resolve_precision_flags(self) -> None:
        """--bf16/--fp16 (TrainingArguments' names) set --mixed_precision; contradictions are refused."""
        for flag in ("bf16", "fp16"):
            if getattr(self, flag):
                if self.mixed_precision not in ("no", flag):
                    raise ValueError(f"--{flag} contradicts --mixed_precision {self.mixed_precision}")
                self.mixed_precision = flag
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 exclude each other")
        # One truth, whichever spelling was used (the run file then agrees with itself on resume).
        self.bf16, self.fp16 = self.mixed_precision == "bf16", self.mixed_precision == "fp16"

    def _check_schedule(self) -> None:
        if self.lr_scheduler_type not in LR_SCHEDULER_TYPES:
            raise ValueError(
                f"--lr_scheduler_type must be one of {', '.join(LR_SCHEDULER_TYPES)}, got {self.lr_scheduler_type!r}"
            )
        if self.warmup_steps < 0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(
                f"--warmup_steps must be >= 0 and --warmup_ratio in [0, 1); got {self.warmup_steps} and "
                f"{self.warmup_ratio}"
            )
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("Give --warmup_steps or --warmup_ratio, not both")
        if self.lr_scheduler_type == "constant" and (self.warmup_steps or self.warmup_ratio):
            raise ValueError(
                "--lr_scheduler_type constant has no warmup (as in TrainingArguments); use constant_with_warmup"
            )

    def _check_model_selection(self) -> None:
        check_task(self.task, "--task")
        if self.freeze_detector and self.task == "detection":
            raise ValueError(
                "--freeze_detector trains a mask head on a frozen detector: it needs --task panoptic or instance"
            )
        if self.metric_for_best_model is None:
            self.metric_for_best_model = DEFAULT_METRIC_FOR_BEST_MODEL[self.task]
        check_metric_name(self.metric_for_best_model, task=self.task)
        if self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.eval_strategy is None:
            self.eval_strategy = "steps" if self.eval_steps > 0 else "epoch"
        if self.eval_strategy not in ("no", "steps", "epoch"):
            raise ValueError(f"--eval_strategy must be 'no', 'steps' or 'epoch', got {self.eval_strategy!r}")
        if self.eval_strategy == "steps" and self.eval_steps < 1:
            raise ValueError("--eval_strategy steps needs --eval_steps >= 1")
        if self.early_stopping_patience < 0 or self.early_stopping_threshold < 0:
            raise ValueError(
                f"--early_stopping_patience and --early_stopping_threshold must be >= 0; got "
                f"{self.early_stopping_patience} and {self.early_stopping_threshold}"
            )
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("--early_stopping_patience needs evaluations: --eval_strategy steps or epoch")

    def num_warmup_steps(self, max_steps: int) -> int:
        """Warmup in optimizer steps (TrainingArguments.get_warmup_steps' rule, or --warmup_ratio of `max_steps`)."""
        if self.warmup_ratio:
            return math.ceil(max_steps * self.warmup_ratio)
        return int(self.warmup_steps) if self.warmup_steps >= 1 else math.ceil(max_steps * self.warmup_steps)

    def lr_drop_step(self, steps_per_epoch: int) -> int:
        """The optimizer step from which the learning rates are multiplied by 0.1: `--lr_drop_steps` if set,
        else `--lr_drop` epochs of `steps_per_epoch` optimizer steps."""
        return self.lr_drop_steps if self.lr_drop_steps > 0 else self.lr_drop * steps_per_epoch
