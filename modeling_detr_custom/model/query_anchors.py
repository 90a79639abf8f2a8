"""Learned anchor boxes for the object queries: each query predicts its box as an offset from its own anchor.

In the original DETR every query starts by predicting roughly the mean box, so early on the Hungarian matching
assigns targets to queries almost at random and the assignment keeps changing; learning to localise is slow.
With an anchor per query (as Anchor DETR and DAB-DETR, here only in the box head), the box of query `q` is

    sigmoid(bbox_predictor(hidden_state_q) + anchor_logits_q)

and the anchors start on a regular grid of centres covering the image, so from the first step each target is
matched to the queries whose anchors lie near it, and each query specialises in a region of the image.

Only torch is imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["QueryAnchorBoxes", "grid_anchor_boxes"]


def grid_anchor_boxes(num_anchors: int, box_size: float) -> Tensor:
    """Boxes of side `box_size` centred on a grid of `ceil(sqrt(n))` columns, row after row.

    Args:
        num_anchors: Number of boxes `n`; the last row is left partly empty when `n` is not a rectangle number.
        box_size: Normalised width and height of every box, in `(0, 1)`.

    Returns:
        `(num_anchors, 4)` normalised `(cx, cy, w, h)`.
    """
    columns = math.ceil(math.sqrt(num_anchors))
    rows = math.ceil(num_anchors / columns)
    index = torch.arange(num_anchors, dtype=torch.float32)
    center_x = (index % columns + 0.5) / columns
    center_y = (torch.div(index, columns, rounding_mode="floor") + 0.5) / rows
    size = torch.full_like(center_x, box_size)
    return torch.stack([center_x, center_y, size, size], dim=-1)


class QueryAnchorBoxes(nn.Module):
    """One learned anchor box per query (of every query group), stored as logits of `(cx, cy, w, h)`.

    Args:
        num_queries: Queries per group.
        num_query_groups: Groups (see `DetrCustomConfig.num_query_groups`); every group starts on the same grid.
        box_size: Initial normalised width and height of the anchors.
    """

    def __init__(self, num_queries: int, num_query_groups: int = 1, box_size: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < box_size < 1.0:
            raise ValueError(f"box_size={box_size} must be in (0, 1).")
        self.num_queries = num_queries
        self.num_query_groups = num_query_groups
        self.box_size = box_size
        self.weight = nn.Parameter(torch.empty(num_query_groups * num_queries, 4))
        self.reset_parameters()

    def initial_logits(self) -> Tensor:
        """`(num_query_groups * num_queries, 4)` logits of the grid anchors, the initial value of `weight`."""
        boxes_cxcywh = grid_anchor_boxes(self.num_queries, self.box_size).repeat(self.num_query_groups, 1)
        return torch.logit(boxes_cxcywh)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.copy_(self.initial_logits())

    def forward(self, box_logits: Tensor) -> Tensor:
        """Adds each query's anchor to its box logits and maps them to boxes.

        Args:
            box_logits: `(..., num_predicted_queries, 4)`, the box head output for the first
                `num_predicted_queries` queries (group 0 only at inference, all groups in training).

        Returns:
            Normalised `(cx, cy, w, h)` boxes, same shape.
        """
        return (box_logits + self.weight[: box_logits.shape[-2]]).sigmoid()

    def extra_repr(self) -> str:
        return f"num_queries={self.num_queries}, num_query_groups={self.num_query_groups}, box_size={self.box_size}"
