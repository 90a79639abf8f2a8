"""Post-processing of model outputs into scored boxes, shared by the processor and every app.

Only sibling imports and third-party packages: copied next to Hub checkpoints for `trust_remote_code`.
"""

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = ["post_process_object_detection"]


def post_process_object_detection(
    outputs: Any,
    threshold: float = 0.5,
    target_sizes: Tensor | Sequence[Sequence[int]] | None = None,
    top_k: int | None = None,
) -> list[dict[str, Tensor]]:
    """Turns model outputs into scored boxes per image.

    Softmax over the classes, the "no object" column (the last) dropped, best class per query, queries with
    `score > threshold` kept (in query order; with `top_k`, the `top_k` best of them, best first), boxes to
    absolute `(x0, y0, x1, y1)` in each image's `target_sizes` and clipped to it.

    Args:
        outputs: Anything with `logits` `(batch_size, num_queries, num_labels + 1)` and `pred_boxes`
            `(batch_size, num_queries, 4)` normalised cxcywh, as attributes or keys (e.g. a `ModelOutput`).
        threshold: Keep queries whose score is above this.
        target_sizes: `(height, width)` per image, a list of pairs or a `(batch_size, 2)` tensor, usually the
            original image sizes. `None` returns boxes normalised to [0, 1].
        top_k: Keep at most this many detections per image.

    Returns:
        One dict per image: `scores` `(n,)`, `labels` `(n,)` int64, `boxes` `(n, 4)` xyxy.
    """
    logits, pred_boxes = _get_detection_outputs(outputs)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"`threshold` must be a number (scores are in [0, 1]); got {threshold!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be None or a positive int; got {top_k!r}.")
    scale = _target_scale(target_sizes, logits.shape[0], pred_boxes.device)  # (B, 4) as (w, h, w, h)
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q)
    boxes_xyxy = box_convert(pred_boxes, "cxcywh", "xyxy") * scale[:, None, :]  # (B, Q, 4)
    boxes_xyxy = torch.minimum(boxes_xyxy.clamp(min=0), scale[:, None, :])
    results = []
    for image_scores, image_labels, image_boxes in zip(scores, labels, boxes_xyxy):
        keep = image_scores > threshold
        image_scores, image_labels, image_boxes = image_scores[keep], image_labels[keep], image_boxes[keep]
        if top_k is not None:
            order = image_scores.argsort(descending=True)[:top_k]
            image_scores, image_labels, image_boxes = image_scores[order], image_labels[order], image_boxes[order]
        results.append({"scores": image_scores, "labels": image_labels, "boxes": image_boxes})
    return results


def _get_detection_outputs(outputs: Any) -> tuple[Tensor, Tensor]:
    def field(name: str) -> Any:
        if isinstance(outputs, Mapping):
            return outputs.get(name)
        return getattr(outputs, name, None)

    logits, pred_boxes = field("logits"), field("pred_boxes")
    if not isinstance(logits, Tensor) or not isinstance(pred_boxes, Tensor):
        raise TypeError(
            "`outputs` must have tensors `logits` (batch_size, num_queries, num_labels + 1) and `pred_boxes` "
            f"(batch_size, num_queries, 4), as attributes or keys; got {type(outputs).__name__}."
        )
    if (
        logits.ndim != 3
        or pred_boxes.ndim != 3
        or pred_boxes.shape[-1] != 4
        or logits.shape[:2] != pred_boxes.shape[:2]
    ):
        raise ValueError(
            f"`logits` must be (batch_size, num_queries, num_labels + 1) and `pred_boxes` (batch_size, num_queries, "
            f"4); got {tuple(logits.shape)} and {tuple(pred_boxes.shape)}."
        )
    return logits, pred_boxes


def _target_scale(target_sizes: Any, batch_size: int, device: torch.device) -> Tensor:
    """`(batch_size, 4)` float32 `(w, h, w, h)` per image; ones when `target_sizes` is None."""
    if target_sizes is None:
        return torch.ones((batch_size, 4), dtype=torch.float32, device=device)
    sizes = torch.as_tensor(
        target_sizes.tolist() if isinstance(target_sizes, Tensor) else target_sizes, dtype=torch.float32
    )
    if sizes.shape != (batch_size, 2) or not bool((sizes > 0).all()):
        raise ValueError(
            f"`target_sizes` must give a positive (height, width) for each of the {batch_size} images; "
            f"got shape {tuple(sizes.shape)}."
        )
    heights, widths = sizes.to(device).unbind(1)
    return torch.stack([widths, heights, widths, heights], dim=1)
