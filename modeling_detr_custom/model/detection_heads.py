"""The detector's heads on the decoder output, and its detection loss: one rule for every model built on it.

`DetrCustomForObjectDetection` and `DetrCustomForSegmentation` (through its `detr`) turn the decoder output into
class logits and boxes, and compute the set loss, here: query anchor boxes, iterative box refinement, auxiliary
outputs and contrastive denoising then behave the same in both, and a new convergence option is added once.
Only torch and the package's own modules are imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .box_refinement import refine_boxes
from .criterion import SetCriterion
from .denoising import DenoisingBatch, denoising_predictions
from .matcher import HungarianMatcher

__all__ = ["DetectionHeadsMixin", "build_criterion"]


def build_criterion(config: Any, criterion_class: type[SetCriterion] = SetCriterion, **extra: Any) -> SetCriterion:
    """The detector's matcher and set loss from the config (`extra`: arguments of a `criterion_class` subclass,
    e.g. the segmentation criterion's mask-loss coefficients)."""
    focal = {"focal_alpha": config.focal_alpha, "focal_gamma": config.focal_gamma}
    class_cost_type = "probability" if config.class_loss_type == "cross_entropy" else "focal"
    matcher = HungarianMatcher(config.class_cost, config.bbox_cost, config.giou_cost, class_cost_type, **focal)
    return criterion_class(
        config.num_labels,
        matcher,
        eos_coefficient=config.eos_coefficient,
        bbox_loss_coefficient=config.bbox_loss_coefficient,
        giou_loss_coefficient=config.giou_loss_coefficient,
        class_loss_type=config.class_loss_type,
        **focal,
        **extra,
    )


class DetectionHeadsMixin:
    """Class and box heads, the auxiliary outputs and the loss of a DETR detector (mixed into
    `DetrCustomForObjectDetection`, which owns `class_labels_classifier`, `bbox_predictor`, the optional
    `query_anchor_boxes` and `denoising`, `criterion` and `model`)."""

    config: Any
    model: nn.Module
    training: bool
    class_labels_classifier: nn.Linear
    bbox_predictor: nn.Module

    def _boxes(self, hidden_states: Tensor) -> Tensor:
        """Normalised `(cx, cy, w, h)` boxes `(..., num_queries, 4)`, relative to the query anchors if configured."""
        box_logits = self.bbox_predictor(hidden_states)
        if self.config.query_anchor_boxes:
            return self.query_anchor_boxes(box_logits)
        return box_logits.sigmoid()

    def _refined_boxes(self, intermediate: Tensor | None) -> Tensor | None:
        """Every decoder layer's boxes `(L, B, Q, 4)` under `box_refinement` (box_refinement.py), else None."""
        if self.config.box_refinement == "none":
            return None
        anchors = self.query_anchor_boxes.weight[: intermediate.shape[-2]] if self.config.query_anchor_boxes else None
        return refine_boxes(self.bbox_predictor(intermediate), anchors, self.config.box_refinement)

    def _class_logits(self, hidden_states: Tensor) -> Tensor:
        """Class logits `(..., num_labels + 1)`; with a sigmoid (focal, varifocal) loss the no-object logit is 0.

        Softmax post-processing then turns object logits `z` into `exp(z_c) / (1 + sum_j exp(z_j))`, which is
        `sigmoid(z_c)` when one class dominates: the scores of the focal-trained model, and the same numbers in
        transformers' DETR (the no-object row of the class head never receives a gradient).
        """
        logits = self.class_labels_classifier(hidden_states)
        if self.config.class_loss_type == "cross_entropy":
            return logits
        return torch.cat([logits[..., :-1], torch.zeros_like(logits[..., -1:])], dim=-1)

    def _denoising_queries(self, labels: Sequence[dict[str, Tensor]] | None) -> DenoisingBatch | None:
        """The noised ground-truth queries of this batch: only in training, with labels and the option on."""
        if labels is None or not self.training or self.config.num_denoising_groups <= 0:
            return None
        return self.denoising(labels)

    def _predictions(
        self, last_hidden_state: Tensor, intermediate: Tensor | None, with_auxiliary: bool
    ) -> tuple[Tensor, Tensor, list[dict[str, Tensor]] | None]:
        """Class logits `(B, Q, C+1)`, boxes `(B, Q, 4)` cxcywh and, if `with_auxiliary`, the earlier layers'.

        Args:
            last_hidden_state: `(B, Q, D)` final decoder output (`(B, G*Q, D)` with query groups).
            intermediate: `(L, B, Q, D)` every decoder layer's output, or None (no auxiliary loss, no refinement).
            with_auxiliary: Return the auxiliary outputs (only where a loss can use them: at inference they would
                cost L-1 extra head evaluations, and transformers' pipeline splits every output field per image,
                which a list of dicts breaks).
        """
        logits = self._class_logits(last_hidden_state)
        layer_boxes = self._refined_boxes(intermediate)  # (L, B, Q, 4) or None
        pred_boxes = self._boxes(last_hidden_state) if layer_boxes is None else layer_boxes[-1]
        if intermediate is None or not with_auxiliary:
            return logits, pred_boxes, None
        earlier = intermediate[:-1]  # (L-1, B, Q, D); the last one is final
        all_logits = self._class_logits(earlier)
        all_boxes = self._boxes(earlier) if layer_boxes is None else layer_boxes[:-1]
        auxiliary = [{"logits": lg, "pred_boxes": bx} for lg, bx in zip(all_logits, all_boxes)]
        return logits, pred_boxes, auxiliary

    def _detection_loss(
        self,
        criterion: nn.Module,
        predictions: tuple[Tensor, Tensor, list[dict[str, Tensor]] | None],
        labels: list[dict[str, Tensor]],
        denoising: DenoisingBatch | None,
        denoising_hidden_states: Tensor | None,
        **criterion_inputs: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The set loss of `predictions` (as `_predictions` returns them) plus, in training with denoising, the
        denoising loss on its known matches.

        Args:
            criterion: A `SetCriterion` (or a subclass taking `criterion_inputs`, e.g. the segmentation masks).
            denoising_hidden_states: `(L, B * G, 2M, D)` decoder outputs of the `denoising` queries.
        """
        logits, pred_boxes, auxiliary = predictions
        loss, loss_dict = criterion(
            logits, pred_boxes, labels, auxiliary, num_query_groups=self.model.num_active_query_groups,
            **criterion_inputs,
        )  # fmt: skip
        if denoising is None:
            return loss, loss_dict
        dn_logits, dn_boxes = denoising_predictions(
            denoising_hidden_states, denoising, self._class_logits, self.bbox_predictor, self.config.box_refinement
        )
        dn_loss, dn_loss_dict = criterion.denoising_loss(
            dn_logits, dn_boxes, labels, denoising.matches, denoising.num_groups
        )
        return loss + dn_loss, {**loss_dict, **dn_loss_dict}
