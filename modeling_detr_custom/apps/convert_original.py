"""Convert facebookresearch/detr checkpoints (`.pth`) into this package's parameter names.

Our parameter names are the Hub names transformers writes for `DetrForObjectDetection`, so a Hub checkpoint
needs no conversion. The original repository names its modules differently; `RENAME_TABLE` below is the one
place that records the difference. Everything else here reads the original weights to infer the configuration
they were trained with, checks every key and shape against the model that configuration builds, and writes a
checkpoint folder.

What the original weights do not determine, and how we choose it:

- number of attention heads and DC5 dilation: taken from the `args` the original `main.py` saves next to the
  weights when present, else from the caller, else the original recipe (8 heads, no dilation);
- class names: the original trains on raw COCO category ids (`num_classes` 91, label index == COCO category
  id), so a 91-class checkpoint gets the COCO 2017 names at their ids ("N/A" at the unused ids) unless the
  caller passes `id2label`; any other class count gets `LABEL_i` unless the caller passes names.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from image_processing.image_processing_detr_custom import DetrCustomImageProcessor
from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig
from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection
from modeling_detr_custom.model.modeling_segmentation import DetrCustomForSegmentation

__all__ = [
    "COCO_2017_ID2LABEL",
    "RENAME_TABLE",
    "TASKS",
    "convert_original_checkpoint",
    "convert_original_state_dict",
    "infer_config_kwargs",
    "load_original_checkpoint",
    "original_key_for",
    "read_id2label",
    "rename_original_key",
]

# The one declared rename table: (original name, our name), first match wins. Placeholders: {n} a layer or
# block index, {p} "weight" or "bias", {rest} any dotted suffix. An original `in_proj_{p}` holds the query, key
# and value projections stacked along dim 0; its target's {qkv} marks the split into q_proj, k_proj, v_proj.
# A target of None drops the key on purpose.
RENAME_TABLE: tuple[tuple[str, str | None], ...] = (
    # FrozenBatchNorm2d ignores BatchNorm's step counter (a checkpoint trained with plain BatchNorm has it).
    ("backbone.0.body.{rest}.num_batches_tracked", None),
    # torchvision's ResNet names (conv1, bn1, layerN.M.{conv,bn}K, downsample.{0,1}) equal timm's.
    ("backbone.0.body.{rest}", "model.backbone.conv_encoder.model.{rest}"),
    ("backbone.1.row_embed.weight", "model.position_embedding.row_embeddings.weight"),
    ("backbone.1.col_embed.weight", "model.position_embedding.column_embeddings.weight"),
    ("input_proj.{p}", "model.input_projection.{p}"),
    ("query_embed.weight", "model.query_position_embeddings.weight"),
    ("transformer.encoder.layers.{n}.self_attn.in_proj_{p}", "model.encoder.layers.{n}.self_attn.{qkv}_proj.{p}"),
    ("transformer.encoder.layers.{n}.self_attn.out_proj.{p}", "model.encoder.layers.{n}.self_attn.out_proj.{p}"),
    ("transformer.encoder.layers.{n}.linear1.{p}", "model.encoder.layers.{n}.fc1.{p}"),
    ("transformer.encoder.layers.{n}.linear2.{p}", "model.encoder.layers.{n}.fc2.{p}"),
    ("transformer.encoder.layers.{n}.norm1.{p}", "model.encoder.layers.{n}.self_attn_layer_norm.{p}"),
    ("transformer.encoder.layers.{n}.norm2.{p}", "model.encoder.layers.{n}.final_layer_norm.{p}"),
    # Only pre-norm models have a final encoder LayerNorm.
    ("transformer.encoder.norm.{p}", "model.encoder.layernorm.{p}"),
    ("transformer.decoder.layers.{n}.self_attn.in_proj_{p}", "model.decoder.layers.{n}.self_attn.{qkv}_proj.{p}"),
    ("transformer.decoder.layers.{n}.self_attn.out_proj.{p}", "model.decoder.layers.{n}.self_attn.out_proj.{p}"),
    (
        "transformer.decoder.layers.{n}.multihead_attn.in_proj_{p}",
        "model.decoder.layers.{n}.encoder_attn.{qkv}_proj.{p}",
    ),
    (
        "transformer.decoder.layers.{n}.multihead_attn.out_proj.{p}",
        "model.decoder.layers.{n}.encoder_attn.out_proj.{p}",
    ),
    ("transformer.decoder.layers.{n}.linear1.{p}", "model.decoder.layers.{n}.fc1.{p}"),
    ("transformer.decoder.layers.{n}.linear2.{p}", "model.decoder.layers.{n}.fc2.{p}"),
    ("transformer.decoder.layers.{n}.norm1.{p}", "model.decoder.layers.{n}.self_attn_layer_norm.{p}"),
    ("transformer.decoder.layers.{n}.norm2.{p}", "model.decoder.layers.{n}.encoder_attn_layer_norm.{p}"),
    ("transformer.decoder.layers.{n}.norm3.{p}", "model.decoder.layers.{n}.final_layer_norm.{p}"),
    ("transformer.decoder.norm.{p}", "model.decoder.layernorm.{p}"),
    ("class_embed.{p}", "class_labels_classifier.{p}"),
    ("bbox_embed.layers.{n}.{p}", "bbox_predictor.layers.{n}.{p}"),
    # Panoptic (`DETRsegm`): the detector's keys carry a `detr.` prefix on both sides (see `_PANOPTIC_PREFIX`);
    # the segmentation head keeps the original's names, which are also the Hub names of DetrForSegmentation.
    ("bbox_attention.{rest}", "bbox_attention.{rest}"),
    ("mask_head.{rest}", "mask_head.{rest}"),
)
# The detector inside a panoptic checkpoint: `detr.<detection key>` becomes `detr.<our detection key>`.
_PANOPTIC_PREFIX = "detr."
TASKS = ("detection", "panoptic")

_PLACEHOLDERS = {"n": r"\d+", "p": r"weight|bias", "rest": r"[\w.]+?", "qkv": r"q|k|v"}
_QKV = ("q", "k", "v")

# (blocks in layer1..layer4, bottleneck blocks) -> torchvision/timm ResNet name.
_RESNET_LAYOUTS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}

_COCO_2017_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip

# Label index == COCO 2017 category id, as in the original's 91-class head; unused ids are "N/A".
COCO_2017_ID2LABEL: dict[int, str] = {i: _COCO_2017_NAMES.get(i, "N/A") for i in range(91)}

# How many keys an error message lists per category before summarising the rest as a count.
_MAX_LISTED_KEYS = 20


@dataclass(frozen=True)
class _Rule:
    source: re.Pattern[str]
    target: re.Pattern[str] | None
    source_template: str
    target_template: str | None


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, regex in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{regex})")
    return re.compile(pattern)


_RULES = tuple(
    _Rule(_compile(source), None if target is None else _compile(target), source, target)
    for source, target in RENAME_TABLE
)


def rename_original_key(key: str) -> list[str] | None:
    """Our name(s) for one original parameter name.

    Args:
        key: A facebookresearch/detr state-dict key, e.g. `transformer.encoder.layers.0.linear1.weight`, or a
            panoptic one (`detr.transformer...`, `mask_head.lay1.weight`).

    Returns:
        The names this key becomes: one name, three (q, k, v) for a stacked `in_proj_*`, or none for a key the
        table drops on purpose. `None` when no rule matches (an unknown key).
    """
    if key.startswith(_PANOPTIC_PREFIX):
        targets = rename_original_key(key.removeprefix(_PANOPTIC_PREFIX))
        return None if targets is None else [_PANOPTIC_PREFIX + target for target in targets]
    for rule in _RULES:
        match = rule.source.fullmatch(key)
        if match is None:
            continue
        if rule.target_template is None:
            return []
        if "{qkv}" in rule.target_template:
            return [rule.target_template.format(qkv=qkv, **match.groupdict()) for qkv in _QKV]
        return [rule.target_template.format(**match.groupdict())]
    return None


def original_key_for(key: str) -> str:
    """The original name a key of ours comes from (our name itself when no rule produces it)."""
    if key.startswith(_PANOPTIC_PREFIX):
        return _PANOPTIC_PREFIX + original_key_for(key.removeprefix(_PANOPTIC_PREFIX))
    for rule in _RULES:
        match = None if rule.target is None else rule.target.fullmatch(key)
        if match is not None:
            return rule.source_template.format(**match.groupdict())
    return key


def _require(original: Mapping[str, Tensor], key: str, purpose: str) -> Tensor:
    if key not in original:
        raise ValueError(
            f"the checkpoint has no {key!r}, needed to infer {purpose}; expected a facebookresearch/detr "
            "detection checkpoint (keys such as 'input_proj.weight', 'transformer.encoder.layers.0...')"
        )
    return original[key]


def _count_indexed(original: Mapping[str, Tensor], prefix: str) -> int:
    """1 + the largest N among keys `{prefix}N.*` (0 when there are none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = [int(match.group(1)) for key in original if (match := pattern.match(key))]
    return max(indices, default=-1) + 1


def _infer_resnet(original: Mapping[str, Tensor]) -> str:
    blocks = tuple(_count_indexed(original, f"backbone.0.body.layer{stage}.") for stage in range(1, 5))
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in original
    name = _RESNET_LAYOUTS.get((blocks, bottleneck))
    if name is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(
            f"the backbone has {blocks} {kind} blocks in layer1..layer4, which is no torchvision ResNet; "
            f"supported layouts: {', '.join(_RESNET_LAYOUTS.values())}"
        )
    return name


def infer_config_kwargs(original: Mapping[str, Tensor]) -> dict[str, Any]:
    """The configuration fields an original state dict determines.

    Args:
        original: A facebookresearch/detr detection state dict (the value of the checkpoint's "model" key).

    Returns:
        `DetrCustomConfig` keyword arguments: `backbone`, `d_model`, `encoder_layers`, `decoder_layers`,
        `encoder_ffn_dim`, `decoder_ffn_dim`, `num_queries`, `num_labels`, `pre_norm`,
        `position_embedding_type`.

    Raises:
        ValueError: A key needed for inference is absent, or the backbone is no known ResNet.
    """
    d_model = _require(original, "input_proj.weight", "d_model").shape[0]
    decoder_layers = _count_indexed(original, "transformer.decoder.layers.")
    decoder_ffn_dim = _require(original, "transformer.decoder.layers.0.linear1.weight", "the FFN size").shape[0]
    encoder_ffn_dim = _require(original, "transformer.encoder.layers.0.linear1.weight", "the FFN size").shape[0]
    return {
        "backbone": _infer_resnet(original),
        "d_model": int(d_model),
        "encoder_layers": _count_indexed(original, "transformer.encoder.layers."),
        "decoder_layers": decoder_layers,
        "encoder_ffn_dim": int(encoder_ffn_dim),
        "decoder_ffn_dim": int(decoder_ffn_dim),
        "num_queries": int(_require(original, "query_embed.weight", "num_queries").shape[0]),
        # The original's class head has one extra "no object" output, last.
        "num_labels": int(_require(original, "class_embed.weight", "the number of classes").shape[0]) - 1,
        # The original builds a final encoder LayerNorm only with normalize_before=True.
        "pre_norm": "transformer.encoder.norm.weight" in original,
        "position_embedding_type": "learned" if "backbone.1.row_embed.weight" in original else "sine",
    }


@dataclass
class _Renamed:
    """The rename table applied to a state dict."""

    state_dict: dict[str, Tensor]
    origin: dict[str, str]  # our key -> the original key it comes from
    unknown: list[str]  # original keys no rule matches
    unsplittable: dict[str, tuple[int, ...]]  # stacked q/k/v tensors (original key -> shape) not divisible by 3


def _rename_all(original: Mapping[str, Tensor]) -> _Renamed:
    renamed = _Renamed({}, {}, [], {})
    for key, value in original.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"the checkpoint's {key!r} is a {type(value).__name__}, not a tensor")
        targets = rename_original_key(key)
        if targets is None:
            renamed.unknown.append(key)
            continue
        if len(targets) == 3 and (value.dim() == 0 or value.shape[0] % 3 != 0):
            renamed.unsplittable[key] = tuple(value.shape)
            continue
        # A stacked in_proj (3 * d_model, ...) splits into q, k, v; clone so each owns its storage.
        pieces = value.chunk(3, dim=0) if len(targets) == 3 else (value,)
        for target, piece in zip(targets, pieces, strict=True):
            renamed.state_dict[target] = piece.clone()
            renamed.origin[target] = key
    return renamed


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    hidden = len(keys) - _MAX_LISTED_KEYS
    return f"{shown} (and {hidden} more)" if hidden > 0 else shown


def _check_against_model(renamed: _Renamed, expected: Mapping[str, torch.Size]) -> None:
    """Raise one ValueError naming every unknown, unused, missing or wrongly shaped key (original names)."""
    converted, origin = renamed.state_dict, renamed.origin
    unexpected = renamed.unknown + sorted({origin[key] for key in converted if key not in expected})
    missing = sorted({original_key_for(key) for key in expected if key not in converted} - set(renamed.unsplittable))
    mismatched = [f"{key} {shape} is not 3 stacked projections" for key, shape in renamed.unsplittable.items()]
    mismatched += [
        f"{origin[key]} -> {key} {tuple(value.shape)} != {tuple(expected[key])}"
        for key, value in converted.items()
        if key in expected and value.shape != expected[key]
    ]
    problems = [
        f"{label} ({len(keys)}): {_listed(keys)}"
        for label, keys in (
            ("unexpected keys", unexpected),
            ("missing keys", missing),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError("the checkpoint does not fit the inferred DETR model: " + "; ".join(problems))


_MODEL_CLASSES = {"detection": DetrCustomForObjectDetection, "panoptic": DetrCustomForSegmentation}


def _expected_shapes(config_kwargs: Mapping[str, Any], task: str) -> dict[str, torch.Size]:
    """Every state-dict key and shape of the model `config_kwargs` builds (on the meta device: no memory)."""
    config = DetrCustomConfig(**config_kwargs)
    with torch.device("meta"):
        model = _MODEL_CLASSES[task](config)
    return {key: value.shape for key, value in model.state_dict().items()}


def convert_original_state_dict(
    original: Mapping[str, Tensor],
    num_heads: int = 8,
    dilation: bool = False,
    pre_norm: bool | None = None,
    id2label: Mapping[int, str] | None = None,
    task: str = "detection",
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Rename a facebookresearch/detr state dict to ours and infer the configuration that loads it.

    Args:
        original: The original state dict (a checkpoint's "model" entry): a detection `DETR`, or with
            `task="panoptic"` a `DETRsegm` (`detr.*` keys, `bbox_attention.*`, `mask_head.*`).
        num_heads: Attention heads of every attention layer (the weights cannot tell; the original uses 8).
        dilation: Whether the backbone's last stage is dilated (DC5 checkpoints; the weights cannot tell).
        pre_norm: Expected normalisation placement; `None` infers it from the weights, a value that
            contradicts them is an error.
        id2label: Class names by label index, `num_labels` entries. `None` gives the COCO 2017 names for a
            91-class checkpoint and `LABEL_i` otherwise.
        task: `"detection"` or `"panoptic"`.

    Returns:
        (state dict with our names, `DetrCustomConfig` keyword arguments). The state dict loads with
        `strict=True` into `DetrCustomForObjectDetection(DetrCustomConfig(**kwargs))` (detection) or
        `DetrCustomForSegmentation` (panoptic).

    Raises:
        ValueError: A checkpoint of the other task, unknown or missing keys, a shape that does not match the
            model the inferred configuration builds, contradicting `pre_norm`, or `id2label` of the wrong size.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    is_panoptic = any(key.startswith(_PANOPTIC_PREFIX) for key in original)
    if is_panoptic != (task == "panoptic"):
        found = "a panoptic segmentation ('detr.*' keys)" if is_panoptic else "a detection (no 'detr.*' keys)"
        raise ValueError(
            f"this is {found} checkpoint; convert it with task={'panoptic' if is_panoptic else 'detection'!r}"
        )
    detector = {k.removeprefix(_PANOPTIC_PREFIX): v for k, v in original.items() if k.startswith(_PANOPTIC_PREFIX)}
    config_kwargs = _config_kwargs(detector if is_panoptic else original, num_heads, dilation, pre_norm, id2label)
    renamed = _rename_all(original)
    _check_against_model(renamed, _expected_shapes(config_kwargs, task))
    return renamed.state_dict, config_kwargs


def _config_kwargs(
    original: Mapping[str, Tensor],
    num_heads: int,
    dilation: bool,
    pre_norm: bool | None,
    id2label: Mapping[int, str] | None,
) -> dict[str, Any]:
    kwargs = infer_config_kwargs(original)
    if pre_norm is not None and pre_norm != kwargs["pre_norm"]:
        has = "has" if kwargs["pre_norm"] else "has no"
        raise ValueError(
            f"pre_norm={pre_norm} contradicts the weights: the checkpoint {has} 'transformer.encoder.norm.weight', "
            f"which the original builds only with pre-norm; leave pre_norm unset to infer it"
        )
    num_labels = kwargs.pop("num_labels")
    if id2label is None and num_labels == len(COCO_2017_ID2LABEL):
        id2label = COCO_2017_ID2LABEL
    if id2label is not None and sorted(id2label) != list(range(num_labels)):
        raise ValueError(
            f"id2label must name labels 0..{num_labels - 1} (the checkpoint has {num_labels} classes plus "
            f"'no object'), got {len(id2label)} entries with indices {sorted(id2label)[:5]}..."
        )
    label_kwargs = {"num_labels": num_labels} if id2label is None else {"id2label": dict(id2label)}
    return {
        **kwargs,
        **label_kwargs,
        "encoder_attention_heads": num_heads,
        "decoder_attention_heads": num_heads,
        "dilation": dilation,
        "use_timm_backbone": True,
        "use_pretrained_backbone": False,
    }


def load_original_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a facebookresearch/detr `.pth` with `torch.load(weights_only=True)`.

    Args:
        path: A dict with key "model" (what the original saves, possibly with "optimizer", "args", ...) or a
            bare state dict.

    Returns:
        (state dict, the original training arguments as a dict, empty when the file has none).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is no torch checkpoint, holds objects `weights_only` refuses, or has no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    # The original main.py stores its argparse.Namespace under "args"; it holds only plain values.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{path} cannot be read with torch.load(weights_only=True): {reason}") from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        args = checkpoint.get("args")
        return dict(checkpoint["model"]), vars(args) if isinstance(args, argparse.Namespace) else {}
    if isinstance(checkpoint, Mapping) and all(isinstance(value, Tensor) for value in checkpoint.values()):
        return dict(checkpoint), {}
    raise ValueError(f"{path} holds neither a dict with a 'model' state dict nor a bare state dict of tensors")


def read_id2label(path: str | Path) -> dict[int, str]:
    """Class names from a JSON file: `{"0": "N/A", "1": "person", ...}`, a list of names, or a config.json.

    Raises:
        ValueError: The file is not JSON of one of these forms.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read class names from {path}: {error}") from error
    if isinstance(data, dict) and isinstance(data.get("id2label"), dict):
        data = data["id2label"]
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return dict(enumerate(data))
    if isinstance(data, dict) and all(isinstance(name, str) for name in data.values()):
        try:
            return {int(index): name for index, name in data.items()}
        except ValueError:
            pass
    raise ValueError(
        f"{path} must hold a JSON list of class names or an object mapping label indices to names "
        '(e.g. {"0": "N/A", "1": "person"}), or be a config.json with "id2label"'
    )


def _resolve(name: str, value: Any, training_args: Mapping[str, Any], arg_name: str, default: Any) -> Any:
    """The caller's value, else the checkpoint's training argument, else the original default."""
    from_checkpoint = training_args.get(arg_name)
    if value is not None and from_checkpoint is not None and value != from_checkpoint:
        raise ValueError(
            f"{name}={value} contradicts the checkpoint's training arguments ({arg_name}={from_checkpoint}); "
            f"leave {name} unset to use the checkpoint's value"
        )
    if value is not None:
        return value
    return default if from_checkpoint is None else from_checkpoint


def convert_original_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    num_heads: int | None = None,
    dilation: bool | None = None,
    pre_norm: bool | None = None,
    id2label: Mapping[int, str] | None = None,
    task: str = "detection",
) -> DetrCustomForObjectDetection | DetrCustomForSegmentation:
    """Convert a facebookresearch/detr `.pth` into a checkpoint folder `from_pretrained` loads.

    Writes `config.json` (with `auto_map`) and `model.safetensors`, plus the image processor's
    `preprocessor_config.json` with the original's preprocessing (shortest edge 800, longest 1333, ImageNet
    mean/std).

    Args:
        checkpoint_path: The original checkpoint (see `load_original_checkpoint`).
        output_dir: Folder to write; created if needed.
        num_heads: Attention heads; `None` takes the checkpoint's training `args.nheads`, else 8.
        dilation: DC5 backbone; `None` takes the checkpoint's `args.dilation`, else False.
        pre_norm: See `convert_original_state_dict`.
        id2label: See `convert_original_state_dict`.
        task: `"detection"` (`detr-r50-e632da11.pth` layouts) or `"panoptic"` (`detr-r50-panoptic`,
            `detr-r101-panoptic`: a `DetrCustomForSegmentation`).

    Returns:
        The converted model, in eval mode.

    Raises:
        FileNotFoundError: No such checkpoint file.
        ValueError: Anything `load_original_checkpoint` or `convert_original_state_dict` rejects, or an option
            that contradicts the checkpoint's training arguments.
    """
    original, training_args = load_original_checkpoint(checkpoint_path)
    state_dict, config_kwargs = convert_original_state_dict(
        original,
        num_heads=_resolve("num_heads", num_heads, training_args, "nheads", 8),
        dilation=_resolve("dilation", dilation, training_args, "dilation", False),
        pre_norm=pre_norm,
        id2label=id2label,
        task=task,
    )
    model = _MODEL_CLASSES[task](DetrCustomConfig(**config_kwargs))
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.save_pretrained(output_dir)
    DetrCustomImageProcessor().save_pretrained(output_dir)
    return model
