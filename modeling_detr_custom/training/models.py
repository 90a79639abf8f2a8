"""Named model configurations and loading a model to train from a name, a config file or a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig
from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection
from modeling_detr_custom.model.modeling_segmentation import DetrCustomForSegmentation

__all__ = ["MODEL_PRESETS", "checkpoint_processor", "load_model_for_training"]

# Named configurations. "detr-resnet-50/101" are the original architectures (ImageNet backbone weights from timm
# when reachable). "detr-tiny" is the small configuration measured to learn fastest from scratch on two CPU cores
# (docs/demo_measurements.md): a RegNetX-200MF backbone with trainable BatchNorm in every stage, a 2+2-layer
# transformer of width 128 without dropout, 20 queries, and query anchor boxes, which bought the most of any
# convergence option measured.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "detr-resnet-50": {"backbone": "resnet50", "use_pretrained_backbone": True},
    "detr-resnet-101": {"backbone": "resnet101", "use_pretrained_backbone": True},
    "detr-tiny": {
        "backbone": "regnetx_002",
        "use_pretrained_backbone": False,
        "freeze_backbone_batch_norm": False,
        "backbone_trainable_layers": 5,
        "d_model": 128,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 512,
        "decoder_ffn_dim": 512,
        "num_queries": 20,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "query_anchor_boxes": True,
    },
}
# detr-tiny with iterative box refinement from the query anchors, the only new convergence option that helped at
# equal steps (docs/demo_measurements.md, runs #21-#25).
MODEL_PRESETS["detr-tiny-refine"] = {**MODEL_PRESETS["detr-tiny"], "box_refinement": "iterative"}
# The `make demo` preset: detr-tiny-refine with the no-object class weighted as every other class
# (`eos_coefficient` 1.0 instead of the original's 0.1). With 20 queries and ~2.5 objects per image the original
# weight leaves the unmatched queries too little push towards "no object", so a second query near an object keeps
# a high score: duplicates fell from 28.8% to 7.2% of the drawn boxes, and AP rose (runs #27-#29).
MODEL_PRESETS["detr-tiny-demo"] = {**MODEL_PRESETS["detr-tiny-refine"], "eos_coefficient": 1.0}


def load_model_for_training(
    model: str,
    mapping: CategoryMapping,
    freeze_backbone: bool = False,
    task: str = "detection",
    freeze_detector: bool = False,
    **config_overrides: Any,
) -> tuple[DetrCustomForObjectDetection | DetrCustomForSegmentation, str | None]:
    """Build or load the model to train and give it the data set's labels.

    Args:
        model: a preset name (`MODEL_PRESETS`), a `config.json`-style file to build a fresh model from, or a
            checkpoint folder / Hub id to fine-tune (a different number of classes re-initialises only the
            class head).
        mapping: the training data's categories; written into the config (`id2label`, `label2id`,
            `category_ids`) so predictions map back to the data set's own ids.
        freeze_backbone: freeze every backbone stage, weights and BatchNorm statistics (`--freeze_backbone`, or
            `--lr_backbone 0`: a backbone that does not learn must not drift through its BatchNorm statistics).
        task: `"detection"` builds a `DetrCustomForObjectDetection`; `"panoptic"`/`"instance"` a
            `DetrCustomForSegmentation`, around a detection checkpoint's detector (`from_detector`) or from a
            segmentation checkpoint.
        freeze_detector: (segmentation) train the mask head only (`DetrCustomForSegmentation.freeze_detector`).
        config_overrides: config fields to set on a fresh model (ignored for checkpoints).

    Returns:
        The model and the base checkpoint it came from (None for a fresh model).

    Raises:
        ValueError: one line: an unknown model, a segmentation checkpoint for detection, `freeze_detector` on a
            fresh model or on a checkpoint whose classes are not the data's.
    """
    segmentation = task != "detection"
    model_class = DetrCustomForSegmentation if segmentation else DetrCustomForObjectDetection
    if model in MODEL_PRESETS or Path(model).is_file():
        if freeze_detector:
            raise ValueError(
                f"--freeze_detector trains the mask head on a trained detector, but --model {model} builds a fresh "
                "model; give a detection or segmentation checkpoint folder, or train end to end without it."
            )
        if model in MODEL_PRESETS:
            config = DetrCustomConfig(**{**MODEL_PRESETS[model], **config_overrides})
        else:
            config = DetrCustomConfig.from_json_file(model)
            for key, value in config_overrides.items():
                setattr(config, key, value)
        mapping.apply_to_config(config)
        return _frozen(model_class(config), freeze_backbone), None
    if not Path(model).is_dir() and "/" not in model:
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(MODEL_PRESETS)}), a config file, a checkpoint "
            "folder nor a Hub id (owner/name)."
        )
    # Only keys the config class declares may go through `from_pretrained`: any other (such as `category_ids`
    # for a checkpoint that was not trained here) would be passed on to the model's constructor.
    labels = {"id2label": mapping.id2label, "label2id": mapping.label2id}
    token = os.environ.get("HF_TOKEN")
    checkpoint_config = DetrCustomConfig.from_pretrained(model, token=token)
    is_segmentation_checkpoint = any(str(a).endswith("ForSegmentation") for a in checkpoint_config.architectures or ())
    if freeze_detector:
        _check_same_classes(model, checkpoint_config, mapping)
    if is_segmentation_checkpoint and not segmentation:
        raise ValueError(
            f"--model {model} is a segmentation checkpoint; train it with --task panoptic or instance (--task "
            "detection trains a DetrCustomForObjectDetection)."
        )
    load_class = DetrCustomForSegmentation if is_segmentation_checkpoint else DetrCustomForObjectDetection
    loaded, info = load_class.from_pretrained(
        model, ignore_mismatched_sizes=True, output_loading_info=True, token=token, **labels
    )
    _check_only_class_head_mismatched(model, info.get("mismatched_keys", []))
    mapping.apply_to_config(loaded.config)
    if segmentation and not is_segmentation_checkpoint:
        loaded = DetrCustomForSegmentation.from_detector(loaded)
    if freeze_detector:
        loaded.freeze_detector()
    return _frozen(loaded, freeze_backbone), model


def _check_same_classes(model: str, config: Any, mapping: CategoryMapping) -> None:
    """`--freeze_detector` keeps the class head: the checkpoint must have been trained on the data's classes."""
    checkpoint_names = [str(name) for _, name in sorted((int(k), v) for k, v in config.id2label.items())]
    if checkpoint_names != list(mapping.names):
        raise ValueError(
            f"--freeze_detector keeps the detector's class head, but --model {model} has the classes "
            f"{checkpoint_names}, not the data's {list(mapping.names)}; train end to end (without "
            "--freeze_detector) or train the detector on this data first."
        )


def _frozen(model: Any, freeze_backbone: bool) -> Any:
    if freeze_backbone:
        (model.detr if isinstance(model, DetrCustomForSegmentation) else model).model.freeze_backbone()
    return model


# A new number of classes changes only the class head; any other tensor that does not fit means the folder's
# config.json and weights belong to different models, and training would silently start those from scratch.
_CLASS_HEAD = "class_labels_classifier."


def _check_only_class_head_mismatched(model: str, mismatched: Any) -> None:
    others = [(str(name), tuple(old), tuple(new)) for name, old, new in mismatched if _CLASS_HEAD not in name]
    if others:
        name, old, new = others[0]
        raise ValueError(
            f"--model {model}: {len(others)} weight(s) besides the class head do not fit the model its config.json "
            f"describes (e.g. {name}: {old} in the weights, {new} in the model); they would be re-initialised. "
            "Check that config.json and model.safetensors come from the same checkpoint."
        )


def checkpoint_processor(model: str, image_size: int | None) -> Any:
    """The image processor of the checkpoint fine-tuned from, at the size it was trained with, or None.

    None (the data set's default size) when `--image_size` is given or `model` is not a checkpoint folder with a
    `preprocessor_config.json`: fine-tuning keeps the checkpoint's resolution instead of resetting it to 800/1333.
    """
    config = Path(model) / "preprocessor_config.json"
    if image_size is not None or not config.is_file():
        return None
    from image_processing.image_processing_detr_custom import DetrCustomImageProcessor

    size = json.loads(config.read_text()).get("size")
    return DetrCustomImageProcessor(size=size) if size else None
