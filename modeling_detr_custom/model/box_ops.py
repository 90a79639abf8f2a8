"""Bounding-box utilities: format conversions, area, IoU and generalized IoU.

This is the only box-ops module of the package. Box formats are carried by the argument names:

- ``cxcywh``: ``(center_x, center_y, width, height)``, what the model predicts (normalised to ``[0, 1]``);
- ``xyxy``: ``(x_min, y_min, x_max, y_max)``, what IoU and GIoU are defined on;
- ``xywh``: ``(x_min, y_min, width, height)``, the COCO annotation format.

IoU and GIoU divide by the union and by the enclosing-box area. Both are clamped from below at
``DIVISION_EPS`` so that degenerate boxes (zero width or height, or both boxes reduced to the same point) give
finite values and finite gradients. For boxes whose union is larger than ``DIVISION_EPS`` (any box at least
about 1/3000 of the image on each side in normalised coordinates) the results are exactly the standard formulas.
Half-precision inputs are computed in float32, since products of small coordinates underflow in float16.

Only torch is imported: this file is copied next to Hub checkpoints loaded with ``trust_remote_code``.
"""

import torch
from torch import Tensor

__all__ = [
    "DIVISION_EPS",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "generalized_box_iou",
    "paired_box_iou",
    "paired_generalized_box_iou",
]

# Lower bound of the union and enclosing areas in IoU/GIoU (the value torchvision's GIoU loss uses). Large
# enough that its square stays a normal float32, so gradients through the division stay finite.
DIVISION_EPS = 1e-7


def box_cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """Converts ``(center_x, center_y, width, height)`` boxes to corners.

    Args:
        boxes_cxcywh: Boxes of shape `(..., 4)`.

    Returns:
        Boxes ``(x_min, y_min, x_max, y_max)`` of shape `(..., 4)`.
    """
    center_x, center_y, width, height = boxes_cxcywh.unbind(-1)
    half_width, half_height = 0.5 * width, 0.5 * height
    return torch.stack(
        [center_x - half_width, center_y - half_height, center_x + half_width, center_y + half_height], dim=-1
    )


def box_xyxy_to_cxcywh(boxes_xyxy: Tensor) -> Tensor:
    """Converts corner boxes to ``(center_x, center_y, width, height)``.

    Args:
        boxes_xyxy: Boxes ``(x_min, y_min, x_max, y_max)`` of shape `(..., 4)`.

    Returns:
        Boxes of shape `(..., 4)`.
    """
    x_min, y_min, x_max, y_max = boxes_xyxy.unbind(-1)
    return torch.stack([(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min], dim=-1)


def box_xywh_to_xyxy(boxes_xywh: Tensor) -> Tensor:
    """Converts COCO ``(x_min, y_min, width, height)`` boxes to corners.

    Args:
        boxes_xywh: Boxes of shape `(..., 4)`.

    Returns:
        Boxes ``(x_min, y_min, x_max, y_max)`` of shape `(..., 4)`.
    """
    x_min, y_min, width, height = boxes_xywh.unbind(-1)
    return torch.stack([x_min, y_min, x_min + width, y_min + height], dim=-1)


def box_xyxy_to_xywh(boxes_xyxy: Tensor) -> Tensor:
    """Converts corner boxes to COCO ``(x_min, y_min, width, height)``.

    Args:
        boxes_xyxy: Boxes ``(x_min, y_min, x_max, y_max)`` of shape `(..., 4)`.

    Returns:
        Boxes of shape `(..., 4)`.
    """
    x_min, y_min, x_max, y_max = boxes_xyxy.unbind(-1)
    return torch.stack([x_min, y_min, x_max - x_min, y_max - y_min], dim=-1)


def box_area(boxes_xyxy: Tensor) -> Tensor:
    """Area of corner boxes; zero-width or zero-height boxes have area 0.

    Args:
        boxes_xyxy: Boxes ``(x_min, y_min, x_max, y_max)`` of shape `(N, 4)` (any leading shape works).

    Returns:
        Areas of shape `(N,)`, in float32 for half-precision inputs.
    """
    boxes_xyxy = _upcast(boxes_xyxy)
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection over union.

    Args:
        boxes1_xyxy: Boxes of shape `(N, 4)`, or `(..., N, 4)` for a batch of sets.
        boxes2_xyxy: Boxes of shape `(M, 4)`, or `(..., M, 4)` with the same leading shape.

    Returns:
        ``(iou, union)``, both of shape `(N, M)` (`(..., N, M)`). The union is clamped at ``DIVISION_EPS``, so
        ``iou`` is 0 (not NaN) where both boxes are degenerate.
    """
    _check_pairwise_shapes(boxes1_xyxy, boxes2_xyxy)
    iou, union, _ = _iou_union_enclosing(boxes1_xyxy.unsqueeze(-2), boxes2_xyxy.unsqueeze(-3))
    return iou, union


def generalized_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """Pairwise generalized IoU (https://giou.stanford.edu), in ``[-1, 1]``.

    ``GIoU = IoU - (enclosing_area - union) / enclosing_area``. Finite (with finite gradients) for degenerate
    boxes. Boxes must be valid corners (``x_max >= x_min``, ``y_max >= y_min``); this is not checked because a
    check would synchronise the GPU on every call. Inverted boxes give finite but meaningless values.

    Args:
        boxes1_xyxy: Boxes of shape `(N, 4)`, or `(..., N, 4)` for a batch of sets.
        boxes2_xyxy: Boxes of shape `(M, 4)`, or `(..., M, 4)` with the same leading shape.

    Returns:
        GIoU matrix of shape `(N, M)` (`(..., N, M)`).
    """
    _check_pairwise_shapes(boxes1_xyxy, boxes2_xyxy)
    return _giou(boxes1_xyxy.unsqueeze(-2), boxes2_xyxy.unsqueeze(-3))


def paired_generalized_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """Generalized IoU of corresponding boxes, ``boxes1_xyxy[i]`` against ``boxes2_xyxy[i]``.

    Equal to ``generalized_box_iou(boxes1_xyxy, boxes2_xyxy).diagonal()`` without building the `(N, N)` matrix.

    Args:
        boxes1_xyxy: Boxes of shape `(N, 4)`.
        boxes2_xyxy: Boxes of shape `(N, 4)`.

    Returns:
        GIoU of shape `(N,)`.
    """
    if boxes1_xyxy.shape != boxes2_xyxy.shape or boxes1_xyxy.shape[-1:] != (4,):
        raise ValueError(
            "paired_generalized_box_iou needs two sets of as many boxes, shaped (N, 4), got shapes "
            f"{tuple(boxes1_xyxy.shape)} and {tuple(boxes2_xyxy.shape)}."
        )
    return _giou(boxes1_xyxy, boxes2_xyxy)


def paired_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """IoU of corresponding boxes, ``boxes1_xyxy[i]`` against ``boxes2_xyxy[i]``: `(N, 4)` twice -> `(N,)`."""
    if boxes1_xyxy.shape != boxes2_xyxy.shape or boxes1_xyxy.shape[-1:] != (4,):
        raise ValueError(
            "paired_box_iou needs two sets of as many boxes, shaped (N, 4), got shapes "
            f"{tuple(boxes1_xyxy.shape)} and {tuple(boxes2_xyxy.shape)}."
        )
    return _iou_union_enclosing(boxes1_xyxy, boxes2_xyxy)[0]


def _giou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """GIoU of two broadcastable sets of boxes of shape `(..., 4)`; returns the broadcast shape without 4."""
    iou, union, enclosing_area = _iou_union_enclosing(boxes1_xyxy, boxes2_xyxy)
    return iou - (enclosing_area - union) / enclosing_area


def _iou_union_enclosing(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """IoU, union and enclosing-box area of two broadcastable sets of boxes of shape `(..., 4)`.

    Works on coordinate columns so that every intermediate is a contiguous tensor of the broadcast shape (much
    faster on the pairwise `(N, M)` matrices of the matcher than `(N, M, 2)` corner tensors). The union and the
    enclosing area are clamped at ``DIVISION_EPS``, which only changes them when both boxes are (nearly)
    degenerate; the IoU is then 0 and the GIoU penalty term 0.
    """
    x_min1, y_min1, x_max1, y_max1 = _upcast(boxes1_xyxy).unbind(-1)
    x_min2, y_min2, x_max2, y_max2 = _upcast(boxes2_xyxy).unbind(-1)
    area1 = (x_max1 - x_min1) * (y_max1 - y_min1)
    area2 = (x_max2 - x_min2) * (y_max2 - y_min2)

    intersection_width = (torch.minimum(x_max1, x_max2) - torch.maximum(x_min1, x_min2)).clamp(min=0)
    intersection_height = (torch.minimum(y_max1, y_max2) - torch.maximum(y_min1, y_min2)).clamp(min=0)
    intersection = intersection_width * intersection_height
    union = (area1 + area2 - intersection).clamp(min=DIVISION_EPS)
    iou = intersection / union

    enclosing_width = (torch.maximum(x_max1, x_max2) - torch.minimum(x_min1, x_min2)).clamp(min=0)
    enclosing_height = (torch.maximum(y_max1, y_max2) - torch.minimum(y_min1, y_min2)).clamp(min=0)
    enclosing_area = (enclosing_width * enclosing_height).clamp(min=DIVISION_EPS)
    return iou, union, enclosing_area


def _upcast(boxes: Tensor) -> Tensor:
    """Half-precision floats to float32 (products of small coordinates underflow in float16)."""
    if boxes.is_floating_point() and boxes.dtype not in (torch.float32, torch.float64):
        return boxes.float()
    return boxes


def _check_pairwise_shapes(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> None:
    for name, boxes in (("boxes1_xyxy", boxes1_xyxy), ("boxes2_xyxy", boxes2_xyxy)):
        if boxes.ndim < 2 or boxes.shape[-1] != 4:
            raise ValueError(f"{name} must have shape (num_boxes, 4) or (..., num_boxes, 4), got {tuple(boxes.shape)}.")
    if boxes1_xyxy.shape[:-2] != boxes2_xyxy.shape[:-2]:
        raise ValueError(
            "boxes1_xyxy and boxes2_xyxy need the same leading (batch) shape, got "
            f"{tuple(boxes1_xyxy.shape)} and {tuple(boxes2_xyxy.shape)}."
        )
