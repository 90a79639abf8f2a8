"""Iterative box refinement across decoder layers: each layer's box is an update of the previous layer's box.

In the original DETR every decoder layer predicts its box from scratch (the auxiliary losses train each layer to
do so). With refinement (Deformable DETR's `with_box_refine`, DAB-DETR), layer `l` predicts an offset, in logit
space, from the box of layer `l - 1`; the first layer starts from the query's anchor box when the model has query
anchors (`query_anchor_boxes`), from the centre of the image otherwise:

    logits_0 = bbox_predictor(h_0) + anchor        logits_l = bbox_predictor(h_l) + reference_l
    box_l = sigmoid(logits_l)                      reference_l = logits_{l-1}, detached ("iterative")
                                                               or not detached ("look_forward_twice", DINO)

so later layers only need to learn small corrections, and the auxiliary losses of the early layers locate the
objects for the later ones. "iterative" stops the gradient of layer `l`'s loss at the previous box, as Deformable
DETR; "look forward twice" (DINO) lets it also correct layer `l - 1`'s prediction. The box head is the same
`bbox_predictor` for every layer (its weights and names stay those of DETR checkpoints), and the decoder itself is
unchanged: the refined box is a reparameterisation of the per-layer predictions, so inference needs every layer's
hidden state (`L` evaluations of the small box head instead of one).

Only torch is imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BOX_REFINEMENT_MODES", "refine_boxes"]

BOX_REFINEMENT_MODES = ("none", "iterative", "look_forward_twice")


def refine_boxes(box_offsets: Tensor, initial_logits: Tensor | None, mode: str) -> Tensor:
    """Chains the per-layer box-head outputs into refined boxes.

    Args:
        box_offsets: `(num_layers, batch_size, num_queries, 4)` box-head outputs (logits of `(cx, cy, w, h)`
            offsets), first decoder layer first.
        initial_logits: `(num_queries, 4)` logits the first layer starts from (the query anchors); None = 0,
            a box of half the image's size at its centre.
        mode: `"iterative"` (the previous box's logits without gradient) or `"look_forward_twice"` (with).

    Returns:
        `(num_layers, batch_size, num_queries, 4)` normalised `(cx, cy, w, h)` boxes of every layer.
    """
    if mode not in BOX_REFINEMENT_MODES[1:]:
        raise ValueError(f"refine_boxes mode={mode!r} is unknown; use one of {list(BOX_REFINEMENT_MODES[1:])}.")
    reference = 0.0 if initial_logits is None else initial_logits
    boxes = []
    for offsets in box_offsets.unbind(0):  # (B, Q, 4) per layer; a fixed number of layers, also when traced
        logits = offsets + reference
        boxes.append(logits.sigmoid())
        reference = logits if mode == "look_forward_twice" else logits.detach()
    return torch.stack(boxes)
