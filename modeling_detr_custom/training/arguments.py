"""Command-line arguments of the training scripts, named as transformers' `TrainingArguments` names them.

`DetrDataArguments` (what to train on, which model, how to treat bad data) is shared by `scripts/train.py`
(`DetrTrainingArguments` extends it) and `scripts/train_trainer.py` (parsed next to `DetrTrainerArguments`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeling_detr_custom.data.records import check_bad_data_policy

AUGMENTATIONS = ("detr", "light", "none")  # load_detection_split's named augmentations

__all__ = ["ON_BAD_DATA_HELP", "DetrDataArguments", "DetrTrainingArguments"]

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
            "named configuration: 'detr-resnet-50', 'detr-resnet-101', 'detr-tiny' (small from-scratch CPU default)."
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
        default=1e-5, metadata={"help": "Learning rate of the backbone parameters (0 freezes the backbone)."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
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
    mixed_precision: str = field(default="no", metadata={"help": "Mixed precision: 'no', 'fp16' (CUDA) or 'bf16'."})
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N optimizer steps (0: at the end of every epoch)."}
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

    def lr_drop_step(self, steps_per_epoch: int) -> int:
        """The optimizer step from which the learning rates are multiplied by 0.1: `--lr_drop_steps` if set,
        else `--lr_drop` epochs of `steps_per_epoch` optimizer steps."""
        return self.lr_drop_steps if self.lr_drop_steps > 0 else self.lr_drop * steps_per_epoch
