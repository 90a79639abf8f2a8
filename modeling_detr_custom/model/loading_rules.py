"""The loading rule on top of transformers' `from_pretrained`: backbone and transformer weights must all load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_base_weights", "explain_load_error"]

# The parts of `DetrCustomModel` whose weights must come from the checkpoint (see `check_base_weights`).
_BASE_WEIGHT_PARTS = frozenset(
    ["backbone", "input_projection", "position_embedding", "encoder", "decoder", "query_position_embeddings"]
)
_BASE_PREFIX = "model."
_SEGMENTATION_PREFIX = "detr."


def _is_base_weight(key: str, unexpected: bool) -> bool:
    """Whether a checkpoint key belongs to the backbone or the transformer (with or without the `model.` prefix
    of the detection head, and `detr.` of the segmentation model); an unexpected key anywhere under `model.`
    counts as well."""
    key = key.removeprefix(_SEGMENTATION_PREFIX)
    if unexpected and key.startswith(_BASE_PREFIX):
        return True
    return key.removeprefix(_BASE_PREFIX).split(".", 1)[0] in _BASE_WEIGHT_PARTS


def check_base_weights(loading_info: Mapping[str, Any], source: str) -> None:
    """The loading rule, in one place: backbone and transformer weights are all loaded, with their shapes.

    Args:
        loading_info: transformers' `output_loading_info` dict (`missing_keys`, `unexpected_keys`,
            `mismatched_keys` as `(key, checkpoint_shape, model_shape)`).
        source: What was loaded, for the message.

    Raises:
        ValueError: counting the missing, unexpected and mismatched backbone/transformer keys, naming the first.
    """
    problems = {
        "missing": sorted(key for key in loading_info.get("missing_keys", ()) if _is_base_weight(key, False)),
        "unexpected": sorted(key for key in loading_info.get("unexpected_keys", ()) if _is_base_weight(key, True)),
        "mismatched": sorted(
            f"{key} {tuple(old)} -> {tuple(new)}"
            for key, old, new in loading_info.get("mismatched_keys", ())
            if _is_base_weight(key, False)
        ),
    }
    if not any(problems.values()):
        return
    listed = "; ".join(f"{kind} keys ({len(keys)}): {_first(keys)}" for kind, keys in problems.items() if keys)
    raise ValueError(
        f"Loading {source}: backbone/transformer weights do not match the checkpoint: {listed}. Check that the "
        "config (backbone, layers, d_model, position_embedding_type, pre_norm) matches the checkpoint, or pass "
        "allow_partial_base_weights=True to initialise them at random instead."
    )


def _first(keys: list[str], shown: int = 6) -> str:
    return ", ".join(keys[:shown]) + (f", ... and {len(keys) - shown} more" if len(keys) > shown else "")


def explain_load_error(error: Exception, source: str) -> ValueError | None:
    """A one-line `ValueError` naming `source` for weights that cannot be read (a truncated or corrupt file) or
    that do not fit the config (files of different models in one folder); None for any other error.

    `OSError` and `ValueError` already name the path or the problem (missing folder or file, bad JSON, the rule
    above) and are left as they are.
    """
    if isinstance(error, (OSError, ValueError)):
        return None
    text = str(error)
    first_line = text.splitlines()[0] if text else ""
    if "mismatch" in text or "ignore_mismatched_sizes" in first_line:
        reason = "the weights' shapes do not match its config.json (files of different models in one folder?)"
    elif type(error).__name__ == "SafetensorError" or "deserializ" in text or "PytorchStreamReader" in text:
        reason = f"the weights cannot be read ({type(error).__name__}: {first_line}); the file may be truncated"
    else:
        return None
    return ValueError(f"Cannot load the model in {source}: {reason}.")
