"""Checks of what a user passes to the model, the matcher and the loss: each rule once, with one message.

Labels are checked here for the model's `forward` and the matcher (the loss passes them to the matcher);
coefficients and costs for the config, the matcher and the loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["check_choice", "check_matching_costs", "check_non_negative", "validate_labels"]

# Normalised boxes may leave [0, 1] by float rounding (clipping, augmentation); beyond this they are wrong.
_BOX_TOLERANCE = 1e-3


def check_non_negative(owner: str, values: Mapping[str, float]) -> None:
    """Raises ValueError naming the first value that is not a finite number >= 0."""
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{owner}{name}={value} must be a finite number >= 0.")


def check_matching_costs(owner: str, class_cost: float, bbox_cost: float, giou_cost: float) -> None:
    """Matching costs: finite, >= 0, and not all zero (the matching would be arbitrary)."""
    check_non_negative(owner, {"class_cost": class_cost, "bbox_cost": bbox_cost, "giou_cost": giou_cost})
    if class_cost == bbox_cost == giou_cost == 0:
        raise ValueError(
            f"{owner}class_cost, bbox_cost and giou_cost are all 0, so the Hungarian matching would be arbitrary; "
            "set at least one of them > 0 (the original uses 1, 5, 2)."
        )


def check_choice(owner: str, name: str, value: str, choices: Iterable[str]) -> None:
    """Raises ValueError if `value` is not one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{owner}{name}={value!r} is unknown; use one of {choices}.")


def validate_labels(
    labels: Sequence[Mapping[str, Tensor]],
    batch_size: int,
    num_labels: int,
    device: torch.device | None = None,
    name: str = "labels",
) -> list[dict[str, Tensor]]:
    """Checks detection labels and moves `class_labels`/`boxes` to `device`.

    Args:
        labels: One mapping per image with `class_labels` `(n,)` integer and `boxes` `(n, 4)` float.
        batch_size: Number of images.
        num_labels: Number of classes; class ids must lie in `[0, num_labels)`.
        device: Device to move the tensors to; None leaves them where they are.
        name: What the caller calls the argument (`labels` for the model, `targets` for the matcher and the
            criterion), used in error messages.

    Returns:
        New dicts (other keys kept) with both tensors on `device`.

    Raises:
        ValueError: naming the image index and the key that is missing, mis-shaped or out of range.
        TypeError: a label is not a mapping of tensors.
    """
    if isinstance(labels, Mapping) or not isinstance(labels, Sequence) or len(labels) != batch_size:
        found = f"a sequence of {len(labels)}" if isinstance(labels, Sequence) else type(labels).__name__
        raise ValueError(f"{name} must be a list of {batch_size} dicts (one per image), got {found}.")
    checked = []
    for index, target in enumerate(labels):
        if not isinstance(target, Mapping):
            raise TypeError(f"{name}[{index}] must be a dict, got {type(target).__name__}.")
        for key in ("class_labels", "boxes"):
            if key not in target:
                raise ValueError(f"{name}[{index}] is missing key {key!r} (needs 'class_labels' and 'boxes').")
            if not isinstance(target[key], Tensor):
                raise TypeError(f"{name}[{index}][{key!r}] must be a torch.Tensor, got {type(target[key]).__name__}.")
        class_labels, boxes = target["class_labels"], target["boxes"]
        if class_labels.ndim != 1 or class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool:
            raise ValueError(
                f"{name}[{index}]['class_labels'] must be an int64 tensor of shape (n,), got dtype "
                f"{class_labels.dtype} and shape {tuple(class_labels.shape)}."
            )
        if boxes.shape != (len(class_labels), 4) or not boxes.dtype.is_floating_point:
            raise ValueError(
                f"{name}[{index}]['boxes'] must be a float tensor of shape ({len(class_labels)}, 4) to match "
                f"class_labels, got dtype {boxes.dtype} and shape {tuple(boxes.shape)}."
            )
        checked.append({**target, "class_labels": class_labels.to(device), "boxes": boxes.to(device)})
    _check_label_values(checked, num_labels, name)
    return checked


def _check_label_values(labels: list[dict[str, Tensor]], num_labels: int, name: str) -> None:
    """Class ids in range and finite boxes in `[0, 1]`, with one device-to-host copy for the whole batch."""
    class_labels = torch.cat([target["class_labels"] for target in labels])
    boxes = torch.cat([target["boxes"] for target in labels])
    if not len(class_labels):
        return
    bad_class = (class_labels < 0) | (class_labels >= num_labels)
    if not bool(bad_class.any() | _invalid_boxes(boxes).any()):
        return
    for index, target in enumerate(labels):
        ids, boxes_cxcywh = target["class_labels"], target["boxes"]
        outside = ids[(ids < 0) | (ids >= num_labels)]
        if len(outside):
            raise ValueError(
                f"{name}[{index}]['class_labels'] has ids {outside.tolist()} outside [0, {num_labels}); "
                "map dataset category ids to contiguous labels (see config.id2label)."
            )
        if len(boxes_cxcywh) and bool(_invalid_boxes(boxes_cxcywh).any()):
            raise ValueError(
                f"{name}[{index}]['boxes'] must be finite normalised (cx, cy, w, h) in [0, 1] relative to the "
                f"unpadded image, got values in [{boxes_cxcywh.min().item():.4g}, {boxes_cxcywh.max().item():.4g}]"
                "; divide absolute pixel boxes by the image width and height."
            )


def _invalid_boxes(boxes_cxcywh: Tensor) -> Tensor:
    """`(n,)` True for boxes that are not finite or leave `[0, 1]` (beyond rounding)."""
    outside = (boxes_cxcywh < -_BOX_TOLERANCE) | (boxes_cxcywh > 1 + _BOX_TOLERANCE)
    return (~torch.isfinite(boxes_cxcywh) | outside).any(-1)
