"""Named model configurations and loading a model to train from a name, a config file or a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig
from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection

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
    model: str, mapping: CategoryMapping, freeze_backbone: bool = False, **config_overrides: Any
) -> tuple[DetrCustomForObjectDetection, str | None]:
    """Build or load the model to train and give it the data set's labels.

    Args:
        model: a preset name (`MODEL_PRESETS`), a `config.json`-style file to build a fresh model from, or a
            checkpoint folder / Hub id to fine-tune (a different number of classes re-initialises only the
            class head).
        mapping: the training data's categories; written into the config (`id2label`, `label2id`,
            `category_ids`) so predictions map back to the data set's own ids.
        freeze_backbone: freeze every backbone stage, weights and BatchNorm statistics (`--freeze_backbone`, or
            `--lr_backbone 0`: a backbone that does not learn must not drift through its BatchNorm statistics).
        config_overrides: config fields to set on a fresh model (ignored for checkpoints).

    Returns:
        The model and the base checkpoint it came from (None for a fresh model).
    """
    if model in MODEL_PRESETS or Path(model).is_file():
        if model in MODEL_PRESETS:
            config = DetrCustomConfig(**{**MODEL_PRESETS[model], **config_overrides})
        else:
            config = DetrCustomConfig.from_json_file(model)
            for key, value in config_overrides.items():
                setattr(config, key, value)
        mapping.apply_to_config(config)
        return _frozen(DetrCustomForObjectDetection(config), freeze_backbone), None
    if not Path(model).is_dir() and "/" not in model:
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(MODEL_PRESETS)}), a config file, a checkpoint "
            "folder nor a Hub id (owner/name)."
        )
    # Only keys the config class declares may go through `from_pretrained`: any other (such as `category_ids`
    # for a checkpoint that was not trained here) would be passed on to the model's constructor.
    labels = {"id2label": mapping.id2label, "label2id": mapping.label2id}
    loaded, info = DetrCustomForObjectDetection.from_pretrained(
        model, ignore_mismatched_sizes=True, output_loading_info=True, token=os.environ.get("HF_TOKEN"), **labels
    )
    _check_only_class_head_mismatched(model, info.get("mismatched_keys", []))
    mapping.apply_to_config(loaded.config)
    return _frozen(loaded, freeze_backbone), model


def _frozen(model: DetrCustomForObjectDetection, freeze_backbone: bool) -> DetrCustomForObjectDetection:
    if freeze_backbone:
        model.model.freeze_backbone()
    return model


# A new number of classes changes only the class head; any other tensor that does not fit means the folder's
# config.json and weights belong to different models, and training would silently start those from scratch.
_CLASS_HEAD = "class_labels_classifier."


def _check_only_class_head_mismatched(model: str, mismatched: Any) -> None:
    others = [(str(name), tuple(old), tuple(new)) for name, old, new in mismatched if not name.startswith(_CLASS_HEAD)]
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
