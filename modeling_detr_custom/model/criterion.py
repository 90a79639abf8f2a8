"""DETR set criterion: the Hungarian loss over the final and every auxiliary decoder output.

For each decoder output the matcher assigns queries to targets; then

- ``loss_ce``: cross-entropy over *all* queries, unmatched ones labelled "no object" (the last class index, so
  that class ids ``0 .. num_labels - 1`` stay the dataset's contiguous labels). The no-object class is weighted by
  ``eos_coefficient`` because most of the queries are unmatched and would otherwise dominate;
- ``loss_bbox`` (L1 on ``(cx, cy, w, h)``) and ``loss_giou`` (``1 - GIoU``) over matched pairs, divided by the
  number of target boxes in the global batch averaged over processes;
- ``cardinality_error`` and ``class_error``: logged, never optimised.

All decoder layers are matched with one matcher call (one cost matrix, one copy to the CPU) and every term is
computed for all layers at once; the values equal those of a per-layer loop. The loss runs in float32, also
under autocast.

Only torch and the package's own modules are imported: this file is copied next to Hub checkpoints.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .box_ops import box_cxcywh_to_xyxy, paired_box_iou, paired_generalized_box_iou
from .matcher import HungarianMatcher
from .validation import check_choice, check_non_negative

__all__ = ["SetCriterion", "sigmoid_focal_loss", "varifocal_loss"]

# class_loss_type -> the SetCriterion method computing loss_ce.
_CLASS_LOSS_TERMS = {
    "cross_entropy": "loss_labels",
    "sigmoid_focal": "loss_labels_focal",
    "varifocal": "loss_labels_varifocal",
}


class _Targets(NamedTuple):
    """Targets of the batch concatenated over images."""

    class_labels: Tensor  # (total_targets,) int64
    boxes_cxcywh: Tensor  # (total_targets, 4) float32
    num_per_image: Tensor  # (batch_size,) float32
    num_query_groups: int  # the queries of every image are this many groups, each matched to all targets


class _Matches(NamedTuple):
    """Matched pairs of every layer, flattened layer after layer (each layer has ``pairs_per_layer`` pairs)."""

    layer: Tensor  # (num_layers * pairs_per_layer,) int64
    image: Tensor  # (num_layers * pairs_per_layer,) int64
    query: Tensor  # (num_layers * pairs_per_layer,) int64
    target: Tensor  # (num_layers * pairs_per_layer,) int64, index into the concatenated targets
    pairs_per_layer: int


# Every loss term maps (logits, pred_boxes, targets, matches, num_boxes) to {name: value per layer}.
LossTerm = Callable[[Tensor, Tensor, _Targets, _Matches, Tensor | float], dict[str, Tensor]]


class SetCriterion(nn.Module):
    """Computes the DETR loss; built once per model.

    Args:
        num_labels: Number of object classes, without the no-object class.
        matcher: Assigns queries to targets.
        eos_coefficient: Cross-entropy weight of the no-object class.
        ce_loss_coefficient: Weight of ``loss_ce`` (and ``loss_ce_k``) in the total loss.
        bbox_loss_coefficient: Weight of ``loss_bbox`` (and ``loss_bbox_k``) in the total loss.
        giou_loss_coefficient: Weight of ``loss_giou`` (and ``loss_giou_k``) in the total loss.
        class_loss_type: ``"cross_entropy"`` (the original: softmax over ``num_labels + 1`` classes, no-object
            weighted by ``eos_coefficient``) or ``"sigmoid_focal"`` (sigmoid focal loss over the ``num_labels``
            object columns, summed over queries and classes and divided by num_boxes, as Deformable DETR; the
            no-object column is not used) or ``"varifocal"`` (IoU-aware: as ``"sigmoid_focal"``, with the matched
            class's target the IoU of the matched box, see ``loss_labels_varifocal``).
        focal_alpha: Weight of positives in the sigmoid focal loss (negatives get ``1 - focal_alpha``); with
            ``"varifocal"`` the weight of negatives.
        focal_gamma: Focusing exponent of the sigmoid focal loss.

    Raises:
        ValueError: If ``num_labels < 1``, a coefficient is negative or not finite, or the loss type is unknown.
    """

    def __init__(
        self,
        num_labels: int,
        matcher: HungarianMatcher,
        eos_coefficient: float = 0.1,
        ce_loss_coefficient: float = 1.0,
        bbox_loss_coefficient: float = 5.0,
        giou_loss_coefficient: float = 2.0,
        class_loss_type: str = "cross_entropy",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"SetCriterion num_labels must be >= 1, got {num_labels}.")
        check_choice("SetCriterion ", "class_loss_type", class_loss_type, tuple(_CLASS_LOSS_TERMS))
        coefficients = {
            "eos_coefficient": eos_coefficient,
            "ce_loss_coefficient": ce_loss_coefficient,
            "bbox_loss_coefficient": bbox_loss_coefficient,
            "giou_loss_coefficient": giou_loss_coefficient,
            "focal_alpha": focal_alpha,
            "focal_gamma": focal_gamma,
        }
        check_non_negative("SetCriterion ", coefficients)
        self.num_labels = num_labels
        self.matcher = matcher
        self.eos_coefficient = float(eos_coefficient)
        self.class_loss_type = class_loss_type
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.weight_dict = {
            "loss_ce": float(ce_loss_coefficient),
            "loss_bbox": float(bbox_loss_coefficient),
            "loss_giou": float(giou_loss_coefficient),
        }
        # Not persistent: it is derived from the config, and checkpoints stay loadable by transformers' DETR.
        self.register_buffer("class_weight", torch.empty(num_labels + 1), persistent=False)
        self.reset_parameters()
        self.loss_map: dict[str, LossTerm] = {
            "labels": getattr(self, _CLASS_LOSS_TERMS[class_loss_type]),
            "cardinality": self.loss_cardinality,
            "boxes": self.loss_boxes,
        }

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fills the ``class_weight`` buffer: 1 for every class, ``eos_coefficient`` for "no object".

        transformers' ``from_pretrained`` leaves non-persistent buffers uninitialised (``torch.empty``) and relies
        on the model's ``_init_weights`` to fill them: the model's ``_init_weights`` must call this method.
        """
        self.class_weight.fill_(1.0)
        self.class_weight[-1] = self.eos_coefficient

    def extra_repr(self) -> str:
        return (
            f"num_labels={self.num_labels}, eos_coefficient={self.eos_coefficient}, weights={self.weight_dict}, "
            f"class_loss_type={self.class_loss_type}"
        )

    def forward(
        self,
        logits: Tensor,
        pred_boxes: Tensor,
        targets: list[dict[str, Tensor]],
        auxiliary_outputs: list[dict[str, Tensor]] | None = None,
        num_query_groups: int = 1,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Computes the weighted total loss and every term.

        Args:
            logits: Final class logits of shape `(batch_size, num_queries, num_labels + 1)`.
            pred_boxes: Final normalised ``(cx, cy, w, h)`` boxes of shape `(batch_size, num_queries, 4)`.
            targets: One dict per image with ``class_labels`` `(n_i,)` int64 and ``boxes`` `(n_i, 4)` normalised
                ``(cx, cy, w, h)``; ``n_i = 0`` is valid.
            auxiliary_outputs: Intermediate decoder outputs, first layer first, each a dict with ``logits`` and
                ``pred_boxes`` shaped like the final ones.
            num_query_groups: The queries are this many consecutive groups of equal size (Group DETR), each
                matched one-to-one to the targets on its own. The box losses are divided by
                ``num_query_groups * num_boxes`` (as Group DETR), so every term is a mean over the groups and
                keeps the scale of one group; ``cardinality_error`` counts predictions per group.

        Returns:
            ``(loss, loss_dict)``: the scalar ``sum(coefficient * term)`` over ``loss_ce``, ``loss_bbox``,
            ``loss_giou`` and their auxiliary versions; ``loss_dict`` holds 0-d tensors ``loss_ce``,
            ``loss_bbox``, ``loss_giou``, ``cardinality_error``, ``class_error`` (percent) and, for auxiliary
            output ``k``, ``loss_ce_k``, ``loss_bbox_k``, ``loss_giou_k``, ``cardinality_error_k``.

        Raises:
            ValueError: If shapes, keys or target labels are invalid, or the matching cost is not finite.
        """
        loss, loss_dict, _, _ = self._losses_and_matches(
            logits, pred_boxes, targets, auxiliary_outputs, num_query_groups
        )
        return loss, loss_dict

    def _losses_and_matches(
        self,
        logits: Tensor,
        pred_boxes: Tensor,
        targets: list[dict[str, Tensor]],
        auxiliary_outputs: list[dict[str, Tensor]] | None,
        num_query_groups: int,
    ) -> tuple[Tensor, dict[str, Tensor], _Matches, Tensor | float]:
        """`forward`'s `(loss, loss_dict)`, plus the matched pairs of every layer and the box normaliser (for the
        terms a subclass adds on the final layer, e.g. the mask losses)."""
        outputs = [*(auxiliary_outputs or []), {"logits": logits, "pred_boxes": pred_boxes}]
        self._check_outputs(outputs, num_query_groups)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            all_logits = torch.stack([output["logits"] for output in outputs]).float()  # (L, B, G*Q, C+1)
            all_boxes_cxcywh = torch.stack([output["pred_boxes"] for output in outputs]).float()  # (L, B, G*Q, 4)
            matches = self._match(all_logits, all_boxes_cxcywh, targets, num_query_groups)
            batch_targets = _concat_targets(targets, logits.device, num_query_groups)
            num_boxes = num_query_groups * _num_boxes(len(batch_targets.class_labels), logits.device)
            per_layer: dict[str, Tensor] = {}
            for term in self.loss_map.values():
                per_layer.update(term(all_logits, all_boxes_cxcywh, batch_targets, matches, num_boxes))
        loss = sum(weight * per_layer[name].sum() for name, weight in self.weight_dict.items() if name in per_layer)
        return loss, _name_by_layer(per_layer), matches, num_boxes

    def denoising_loss(
        self,
        logits: Tensor,
        pred_boxes: Tensor,
        targets: list[dict[str, Tensor]],
        matches_per_image: list[tuple[Tensor, Tensor]],
        num_groups: int,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The classification and box terms for queries whose targets are known (denoising, `denoising.py`).

        As ``forward`` with the Hungarian matching replaced by ``matches_per_image``; every unmatched query is a
        negative ("no object"). Box terms are divided by ``num_groups * num_boxes``, as for query groups.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)`, every decoder layer, last one last.
            pred_boxes: `(num_layers, batch_size, num_queries, 4)` normalised ``(cx, cy, w, h)``.
            targets: One dict per image, as for ``forward``.
            matches_per_image: Per image `(query indices, target indices)`, the same for every layer.
            num_groups: Times each target is matched (denoising groups).

        Returns:
            ``(loss, loss_dict)`` with ``dn_loss_ce``, ``dn_loss_bbox``, ``dn_loss_giou`` (final layer) and
            ``dn_loss_ce_k``, ... for the earlier layers; ``dn_class_error`` is logged, not optimised.
        """
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, pred_boxes = logits.float(), pred_boxes.float()
            num_layers = logits.shape[0]
            first_target = torch.tensor([0, *(len(target["boxes"]) for target in targets)]).cumsum(0)
            image = torch.cat([torch.full((len(q),), i) for i, (q, _) in enumerate(matches_per_image)])
            query = torch.cat([q.cpu() for q, _ in matches_per_image])
            target = torch.cat([t.cpu() for _, t in matches_per_image]) + first_target[image]
            pairs = len(query)
            layer = torch.arange(num_layers).repeat_interleave(pairs)
            flat = torch.stack([layer, image.repeat(num_layers), query.repeat(num_layers), target.repeat(num_layers)])
            matches = _Matches(*flat.to(logits.device).unbind(0), pairs_per_layer=pairs)
            batch_targets = _concat_targets(targets, logits.device, num_groups)
            num_boxes = num_groups * _num_boxes(len(batch_targets.class_labels), logits.device)
            per_layer: dict[str, Tensor] = {}
            for term in (self.loss_map["labels"], self.loss_map["boxes"]):
                per_layer.update(term(logits, pred_boxes, batch_targets, matches, num_boxes))
        # Only the class and box terms: a subclass's extra terms (the segmentation masks) have no denoising queries.
        loss = sum(weight * per_layer[name].sum() for name, weight in self.weight_dict.items() if name in per_layer)
        return loss, {f"dn_{name}": value for name, value in _name_by_layer(per_layer).items()}

    def loss_labels(
        self, logits: Tensor, pred_boxes: Tensor, targets: _Targets, matches: _Matches, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        """Weighted cross-entropy over all queries (``loss_ce``) and ``class_error``, per layer.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)` float32.
            pred_boxes: Unused; every term takes the same arguments.
            targets: Concatenated targets.
            matches: Matched pairs of every layer.
            num_boxes: Unused (the cross-entropy is a weighted mean over queries, as in the original).

        Returns:
            ``loss_ce`` and ``class_error``, each of shape `(num_layers,)`.
        """
        num_layers = logits.shape[0]
        target_classes = torch.full(logits.shape[:3], self.num_labels, dtype=torch.int64, device=logits.device)
        target_classes[matches.layer, matches.image, matches.query] = targets.class_labels[matches.target]
        class_weight = self.class_weight.float()
        weighted_nll = F.cross_entropy(
            logits.flatten(0, 2), target_classes.flatten(), weight=class_weight, reduction="none"
        ).view(num_layers, -1)  # (L, B*Q)
        # The weighted mean F.cross_entropy(reduction="mean") takes, per layer. The clamp only matters when
        # every weight is 0 (eos_coefficient 0 and no targets): the loss is then 0 instead of NaN.
        weight_sum = class_weight[target_classes].view(num_layers, -1).sum(1)
        loss_ce = weighted_nll.sum(1) / weight_sum.clamp(min=torch.finfo(torch.float32).tiny)
        return {"loss_ce": loss_ce, "class_error": _class_error(logits, targets, matches)}

    def loss_labels_focal(
        self, logits: Tensor, pred_boxes: Tensor, targets: _Targets, matches: _Matches, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        """Sigmoid focal loss over the object classes (``loss_ce``) and ``class_error``, per layer.

        Every query and object class is a binary problem: 1 for the matched target's class, 0 otherwise
        (unmatched queries are 0 everywhere). The no-object logit is not used. As Deformable DETR, the sum over
        queries and classes is divided by ``num_boxes``.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)` float32.
            pred_boxes: Unused.
            targets: Concatenated targets.
            matches: Matched pairs of every layer.
            num_boxes: Normaliser of the summed loss (>= 1).

        Returns:
            ``loss_ce`` and ``class_error``, each of shape `(num_layers,)`.
        """
        class_logits = logits[..., :-1]  # (L, B, Q, C)
        is_target = torch.zeros_like(class_logits)
        is_target[matches.layer, matches.image, matches.query, targets.class_labels[matches.target]] = 1.0
        loss = sigmoid_focal_loss(class_logits, is_target, self.focal_alpha, self.focal_gamma)
        return {
            "loss_ce": loss.flatten(1).sum(1) / num_boxes,
            "class_error": _class_error(class_logits, targets, matches),
        }

    def loss_labels_varifocal(
        self, logits: Tensor, pred_boxes: Tensor, targets: _Targets, matches: _Matches, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        """IoU-aware classification (``loss_ce``, varifocal loss) and ``class_error``, per layer.

        As ``loss_labels_focal``, except that a matched query's target for its target's class is the IoU
        (without gradient) of its box with the target box, so the score learns to predict box quality: of two
        queries on one object, the looser box is pushed to a lower score.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)` float32.
            pred_boxes: `(num_layers, batch_size, num_queries, 4)` float32 normalised ``(cx, cy, w, h)``.
            targets: Concatenated targets.
            matches: Matched pairs of every layer.
            num_boxes: Normaliser of the summed loss (>= 1).

        Returns:
            ``loss_ce`` and ``class_error``, each of shape `(num_layers,)`.
        """
        class_logits = logits[..., :-1]  # (L, B, Q, C)
        with torch.no_grad():
            matched_iou = paired_box_iou(
                box_cxcywh_to_xyxy(pred_boxes[matches.layer, matches.image, matches.query]),
                box_cxcywh_to_xyxy(targets.boxes_cxcywh[matches.target]),
            )  # (L*P,)
            quality = torch.zeros_like(class_logits)
            quality[matches.layer, matches.image, matches.query, targets.class_labels[matches.target]] = matched_iou
        loss = varifocal_loss(class_logits, quality, self.focal_alpha, self.focal_gamma)
        return {
            "loss_ce": loss.flatten(1).sum(1) / num_boxes,
            "class_error": _class_error(class_logits, targets, matches),
        }

    @torch.no_grad()
    def loss_cardinality(
        self, logits: Tensor, pred_boxes: Tensor, targets: _Targets, matches: _Matches, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        """Mean absolute error between the number of non-"no object" predictions and of targets; logging only.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)`.
            pred_boxes: Unused.
            targets: Concatenated targets.
            matches: Unused.
            num_boxes: Unused.

        Returns:
            ``cardinality_error`` of shape `(num_layers,)`, without gradient.
        """
        if self.class_loss_type == "cross_entropy":
            is_object = logits.argmax(-1) != logits.shape[-1] - 1  # (L, B, G*Q)
        else:  # a sigmoid score above 0.5 in any object class
            is_object = (logits[..., :-1] > 0).any(-1)
        num_predicted = is_object.sum(-1).float() / targets.num_query_groups  # (L, B), per query group
        return {"cardinality_error": (num_predicted - targets.num_per_image).abs().mean(-1)}

    def loss_boxes(
        self, logits: Tensor, pred_boxes: Tensor, targets: _Targets, matches: _Matches, num_boxes: Tensor | float
    ) -> dict[str, Tensor]:
        """L1 (``loss_bbox``) and ``1 - GIoU`` (``loss_giou``) summed over matched pairs, divided by num_boxes.

        Args:
            logits: Unused.
            pred_boxes: `(num_layers, batch_size, num_queries, 4)` float32 normalised ``(cx, cy, w, h)``.
            targets: Concatenated targets.
            matches: Matched pairs of every layer.
            num_boxes: Number of target boxes per process, averaged over processes (>= 1).

        Returns:
            ``loss_bbox`` and ``loss_giou``, each of shape `(num_layers,)`; zeros (with a gradient graph) when
            there are no targets.
        """
        num_layers = pred_boxes.shape[0]
        matched_boxes_cxcywh = pred_boxes[matches.layer, matches.image, matches.query]  # (L*P, 4)
        target_boxes_cxcywh = targets.boxes_cxcywh[matches.target]  # (L*P, 4)
        l1 = F.l1_loss(matched_boxes_cxcywh, target_boxes_cxcywh, reduction="none").sum(-1)
        giou = paired_generalized_box_iou(
            box_cxcywh_to_xyxy(matched_boxes_cxcywh), box_cxcywh_to_xyxy(target_boxes_cxcywh)
        )
        return {
            "loss_bbox": l1.view(num_layers, matches.pairs_per_layer).sum(1) / num_boxes,
            "loss_giou": (1 - giou).view(num_layers, matches.pairs_per_layer).sum(1) / num_boxes,
        }

    def _match(
        self, logits: Tensor, pred_boxes_cxcywh: Tensor, targets: list[dict[str, Tensor]], num_query_groups: int
    ) -> _Matches:
        """Matches every layer and every query group independently with one matcher call.

        Args:
            logits: `(num_layers, batch_size, num_queries, num_labels + 1)`; `num_queries` counts all groups.
            pred_boxes_cxcywh: `(num_layers, batch_size, num_queries, 4)`.
            targets: One dict per image.
            num_query_groups: Consecutive query groups per layer, each matched on its own.
        """
        num_layers, _, num_queries = logits.shape[:3]
        # Layer l's query group g becomes matcher group l * G + g of each image: (L, B, G*Q, C) -> (B, L*G*Q, C).
        indices = self.matcher(
            logits.transpose(0, 1).flatten(1, 2),
            pred_boxes_cxcywh.transpose(0, 1).flatten(1, 2),
            targets,
            num_groups=num_layers * num_query_groups,
        )
        first_target = torch.tensor([0, *(len(target["boxes"]) for target in targets)]).cumsum(0)
        pairs_per_image = torch.tensor([len(pred) for pred, _ in indices])
        image = torch.repeat_interleave(torch.arange(len(indices)), pairs_per_image)
        grouped_query = torch.cat([pred for pred, _ in indices])
        target = torch.cat([target for _, target in indices]) + first_target[image]
        layer = grouped_query // num_queries
        order = torch.argsort(layer, stable=True)  # layer after layer, images in order within a layer
        flat = torch.stack([layer, image, grouped_query % num_queries, target])[:, order]
        flat = flat.to(logits.device)  # one host-to-device copy
        return _Matches(*flat.unbind(0), pairs_per_layer=len(order) // num_layers)

    def _check_outputs(self, outputs: list[dict[str, Tensor]], num_query_groups: int) -> None:
        final_logits, final_boxes = outputs[-1]["logits"], outputs[-1]["pred_boxes"]
        if final_logits.ndim != 3 or final_logits.shape[-1] != self.num_labels + 1:
            raise ValueError(
                f"logits must have shape (batch_size, num_queries, num_labels + 1 = {self.num_labels + 1}), "
                f"got {tuple(final_logits.shape)}."
            )
        if final_boxes.shape != (*final_logits.shape[:2], 4):
            raise ValueError(
                f"pred_boxes must have shape {(*final_logits.shape[:2], 4)} to match logits, got "
                f"{tuple(final_boxes.shape)}."
            )
        if num_query_groups < 1 or final_logits.shape[1] % num_query_groups:
            raise ValueError(
                f"num_query_groups={num_query_groups} must be >= 1 and divide the number of queries "
                f"({final_logits.shape[1]})."
            )
        for index, output in enumerate(outputs[:-1]):
            if "logits" not in output or "pred_boxes" not in output:
                raise ValueError(f"auxiliary_outputs[{index}] needs keys 'logits' and 'pred_boxes'.")
            if output["logits"].shape != final_logits.shape or output["pred_boxes"].shape != final_boxes.shape:
                raise ValueError(
                    f"auxiliary_outputs[{index}] has logits {tuple(output['logits'].shape)} and pred_boxes "
                    f"{tuple(output['pred_boxes'].shape)}; they must be shaped like the final ones, "
                    f"{tuple(final_logits.shape)} and {tuple(final_boxes.shape)}."
                )


# Logged for the final layer only, as in the original.
_FINAL_LAYER_ONLY = frozenset({"class_error"})


def _name_by_layer(per_layer: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: (L,)}`` -> ``{name: final layer, name_k: auxiliary layer k}``, final layer first."""
    loss_dict = {name: values[-1] for name, values in per_layer.items()}
    num_layers = len(next(iter(per_layer.values())))
    for layer in range(num_layers - 1):
        loss_dict.update(
            {f"{name}_{layer}": values[layer] for name, values in per_layer.items() if name not in _FINAL_LAYER_ONLY}
        )
    return loss_dict


@torch.no_grad()
def _class_error(logits: Tensor, targets: _Targets, matches: _Matches) -> Tensor:
    """100 - top-1 accuracy (percent) of matched queries, shape `(num_layers,)`; 100 without targets (original)."""
    num_layers = logits.shape[0]
    if matches.pairs_per_layer == 0:
        return torch.full((num_layers,), 100.0, device=logits.device)
    predicted = logits[matches.layer, matches.image, matches.query].argmax(-1)
    correct = (predicted == targets.class_labels[matches.target]).float().view(num_layers, -1)
    return 100 - 100 * correct.mean(1)


def _concat_targets(targets: list[dict[str, Tensor]], device: torch.device, num_query_groups: int) -> _Targets:
    num_per_image = [len(target["class_labels"]) for target in targets]
    return _Targets(
        class_labels=torch.cat([target["class_labels"] for target in targets]).to(device, torch.int64),
        boxes_cxcywh=torch.cat([target["boxes"] for target in targets]).to(device, torch.float32),
        num_per_image=torch.tensor(num_per_image, dtype=torch.float32, device=device),
        num_query_groups=num_query_groups,
    )


def _num_boxes(num_local_boxes: int, device: torch.device) -> Tensor | float:
    """Target boxes per process averaged over processes, clamped at 1: the box-loss normaliser.

    As the original: ``all_reduce(SUM) / world_size``. (transformers 5.x averages and then divides by the
    world size again, so its box losses shrink with the number of processes.)
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        num_boxes = torch.tensor(float(num_local_boxes), device=device)
        torch.distributed.all_reduce(num_boxes)  # SUM over processes
        return (num_boxes / torch.distributed.get_world_size()).clamp(min=1)
    return max(float(num_local_boxes), 1.0)


def sigmoid_focal_loss(logits: Tensor, is_target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss (Lin et al., 2017), `alpha_t * (1 - p_t) ** gamma * BCE(logits, is_target)`.

    Args:
        logits: Any shape, raw scores.
        is_target: Same shape, 1.0 for positives and 0.0 for negatives.
        alpha: Weight of positives; negatives get `1 - alpha`.
        gamma: Focusing exponent; 0 gives alpha-weighted binary cross-entropy.

    Returns:
        The loss, shaped like `logits`.
    """
    probabilities = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, is_target, reduction="none")
    p_t = probabilities * is_target + (1 - probabilities) * (1 - is_target)
    alpha_t = alpha * is_target + (1 - alpha) * (1 - is_target)
    return alpha_t * (1 - p_t) ** gamma * bce


def varifocal_loss(logits: Tensor, quality: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Elementwise varifocal loss (Zhang et al., 2021): binary cross-entropy towards the soft target `quality`,
    weighted by `quality` on positives and by `alpha * p ** gamma` on negatives (as RT-DETR's ``loss_labels_vfl``).

    Args:
        logits: Any shape, raw scores.
        quality: Same shape, the IoU of the matched box on the matched class, 0.0 elsewhere (negatives).
        alpha: Weight of the negatives.
        gamma: Focusing exponent on the negatives' predicted probability.

    Returns:
        The loss, shaped like `logits`.
    """
    probabilities = logits.sigmoid().detach()
    weight = alpha * probabilities**gamma * (quality <= 0) + quality
    return F.binary_cross_entropy_with_logits(logits, quality, weight=weight, reduction="none")
