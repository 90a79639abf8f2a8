"""Hungarian matching between predicted queries and target boxes (the DETR bipartite matching).

The cost of assigning query ``q`` to target ``t`` is

    class_cost * (-softmax(logits[q])[label[t]]) + bbox_cost * L1(box[q], box[t]) + giou_cost * (-GIoU(q, t))

with L1 on normalised ``(cx, cy, w, h)`` and GIoU on corners. As in the original, the class term uses the
probability instead of the log-likelihood (``1 - p`` with the constant dropped): it is commensurable with the box
terms and bounded.

One cost matrix is computed for the whole batch on the model's device, copied to the CPU once, and
``scipy.optimize.linear_sum_assignment`` solves each image's block. Each image's queries are scored against its
own targets, padded to the largest target count, `(batch_size, num_queries, max_targets)`: the original flattens
the batch and scores every query against every target of every image, then discards the blocks between images,
which is ``batch_size`` times the work for the same result.

Only torch, scipy and the standard library are imported: this file is copied next to Hub checkpoints.
"""

from typing import NoReturn

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .validation import check_choice, check_matching_costs, check_non_negative, validate_labels

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets minimising the total matching cost.

    Queries left unassigned are supervised as "no object" by the criterion. The matcher has no parameters and no
    gradient; it always computes in float32, also under autocast.

    Args:
        class_cost: Weight of the classification term (negative probability of the target class).
        bbox_cost: Weight of the L1 distance between ``(cx, cy, w, h)`` boxes.
        giou_cost: Weight of the negative generalized IoU.
        class_cost_type: ``"probability"`` (the original: ``-softmax(logits)[label]`` over ``num_labels + 1``
            classes) or ``"focal"`` (for a sigmoid focal loss, as Deformable DETR: with ``p = sigmoid(logit)`` of
            the target class, ``alpha * (1 - p) ** gamma * -log(p) - (1 - alpha) * p ** gamma * -log(1 - p)``,
            the focal loss of calling the query positive minus that of calling it negative; the no-object logit
            is not used).
        focal_alpha: ``alpha`` of the focal cost.
        focal_gamma: ``gamma`` of the focal cost.

    Raises:
        ValueError: If a weight is negative or not finite, if all weights are 0, or the cost type is unknown.
    """

    def __init__(
        self,
        class_cost: float = 1.0,
        bbox_cost: float = 5.0,
        giou_cost: float = 2.0,
        class_cost_type: str = "probability",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        check_matching_costs("HungarianMatcher ", class_cost, bbox_cost, giou_cost)
        check_non_negative("HungarianMatcher ", {"focal_alpha": focal_alpha, "focal_gamma": focal_gamma})
        check_choice("HungarianMatcher ", "class_cost_type", class_cost_type, ("probability", "focal"))
        self.class_cost = float(class_cost)
        self.bbox_cost = float(bbox_cost)
        self.giou_cost = float(giou_cost)
        self.class_cost_type = class_cost_type
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)

    def extra_repr(self) -> str:
        focal = f", focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma}" * (self.class_cost_type == "focal")
        return (
            f"class_cost={self.class_cost}, bbox_cost={self.bbox_cost}, giou_cost={self.giou_cost}, "
            f"class_cost_type={self.class_cost_type}{focal}"
        )

    @torch.no_grad()
    # The assignment runs in scipy on the host: torch.compile calls it as it is instead of tracing into it.
    @torch.compiler.disable
    def forward(
        self,
        logits: Tensor,
        pred_boxes: Tensor,
        targets: list[dict[str, Tensor]],
        *,
        num_groups: int = 1,
    ) -> list[tuple[Tensor, Tensor]]:
        """Matches every image's queries to its targets.

        Args:
            logits: Class logits of shape `(batch_size, num_queries, num_labels + 1)`, last index = no object.
            pred_boxes: Predicted normalised ``(cx, cy, w, h)`` boxes of shape `(batch_size, num_queries, 4)`.
            targets: One dict per image with ``class_labels`` `(n_i,)` int64 in ``[0, num_labels)`` and
                ``boxes`` `(n_i, 4)` normalised ``(cx, cy, w, h)``; ``n_i = 0`` is valid.
            num_groups: Split each image's queries into this many consecutive groups of equal size and match
                every group to the targets independently (the criterion matches all decoder layers in one call
                this way). Indices returned still count over all ``num_queries`` queries, group after group.

        Returns:
            One ``(pred_indices, target_indices)`` pair per image, CPU int64 tensors each of length
            ``num_groups * min(num_queries // num_groups, n_i)``; ``pred_indices`` ascending within each group.

        Raises:
            ValueError: If shapes or target labels are invalid, or if a cost is NaN/inf (the message names the
                image and the queries; usually the model diverged or a target box is NaN).
        """
        _check_inputs(logits, pred_boxes, targets, num_groups)
        num_targets = [len(target["boxes"]) for target in targets]
        if sum(num_targets) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty.clone()) for _ in targets]

        # Padding with label 0 and a valid box keeps the padded costs finite; they are never read.
        target_labels = pad_sequence([target["class_labels"] for target in targets], batch_first=True)
        target_boxes_cxcywh = pad_sequence([target["boxes"] for target in targets], batch_first=True, padding_value=0.5)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            cost = self._cost_matrix(
                logits.float(),
                pred_boxes.float(),
                target_labels.to(logits.device),
                target_boxes_cxcywh.to(pred_boxes.device, torch.float32),
            )
        cost = cost.cpu()  # the only device-to-host copy; labels follow without a second wait
        return _assign(cost.numpy(), num_targets, num_groups, target_boxes_cxcywh)

    def _cost_matrix(
        self, logits: Tensor, pred_boxes_cxcywh: Tensor, target_labels: Tensor, target_boxes_cxcywh: Tensor
    ) -> Tensor:
        """Cost of every query of every image against the (padded) targets of the same image.

        Args:
            logits: `(batch_size, num_queries, num_labels + 1)` float32.
            pred_boxes_cxcywh: `(batch_size, num_queries, 4)` float32.
            target_labels: `(batch_size, max_targets)` int64.
            target_boxes_cxcywh: `(batch_size, max_targets, 4)` float32.

        Returns:
            Cost of shape `(batch_size, num_queries, max_targets)`.
        """
        batch_size, num_queries = logits.shape[:2]
        cost = torch.zeros(batch_size, num_queries, target_labels.shape[1], device=logits.device)
        # Terms with weight 0 are skipped, so that 0 * NaN cannot poison the matrix.
        if self.class_cost:
            # Out-of-range labels are reported after the copy to the CPU; clamping avoids a CUDA device assert.
            labels = target_labels.clamp(0, logits.shape[-1] - 1)[:, None, :].expand(-1, num_queries, -1)
            cost += self.class_cost * self._class_cost(logits, labels)
        if self.bbox_cost:
            cost += self.bbox_cost * torch.cdist(pred_boxes_cxcywh, target_boxes_cxcywh, p=1)
        if self.giou_cost:
            giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes_cxcywh), box_cxcywh_to_xyxy(target_boxes_cxcywh))
            cost -= self.giou_cost * giou
        return cost

    def _class_cost(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Classification cost `(batch_size, num_queries, max_targets)` of each query for each target's label.

        Args:
            logits: `(batch_size, num_queries, num_labels + 1)` float32.
            labels: `(batch_size, num_queries, max_targets)` int64, each target's label repeated per query.
        """
        if self.class_cost_type == "probability":
            return -logits.softmax(-1).gather(2, labels)
        # log-sigmoid is exact where `-log(p + eps)` would saturate; labels < num_labels never reach no-object.
        target_logits = logits.gather(2, labels)
        probabilities = target_logits.sigmoid()
        positive = self.focal_alpha * (1 - probabilities) ** self.focal_gamma * -F.logsigmoid(target_logits)
        negative = (1 - self.focal_alpha) * probabilities**self.focal_gamma * -F.logsigmoid(-target_logits)
        return positive - negative


def _assign(
    cost: np.ndarray, num_targets: list[int], num_groups: int, target_boxes_cxcywh: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """Solves the assignment of every (image, query group) block of the batch cost matrix.

    Args:
        cost: `(batch_size, num_queries, max_targets)`; image ``i`` uses its first ``n_i`` columns.
        num_targets: ``n_i`` per image.
        num_groups: Number of consecutive query groups matched independently.
        target_boxes_cxcywh: `(batch_size, max_targets, 4)`, only read to explain non-finite costs.
    """
    group_size = cost.shape[1] // num_groups
    all_finite = bool(np.isfinite(cost).all())
    indices = []
    for image_index, count in enumerate(num_targets):
        pred_indices, target_indices = [], []
        for group in range(num_groups if count else 0):
            block = cost[image_index, group * group_size : (group + 1) * group_size, :count]
            # Padded columns are never used: only the image's real targets have to give finite costs.
            if not all_finite and not np.isfinite(block).all():
                _raise_non_finite(block, image_index, group, num_groups, target_boxes_cxcywh[image_index, :count])
            rows, columns = linear_sum_assignment(block)
            pred_indices.append(rows + group * group_size)
            target_indices.append(columns)
        indices.append((_as_index_tensor(pred_indices), _as_index_tensor(target_indices)))
    return indices


def _as_index_tensor(arrays: list[np.ndarray]) -> Tensor:
    if not arrays:
        return torch.empty(0, dtype=torch.int64)
    return torch.from_numpy(np.concatenate(arrays).astype(np.int64))


def _raise_non_finite(
    block: np.ndarray, image_index: int, group: int, num_groups: int, target_boxes_cxcywh: Tensor
) -> NoReturn:
    bad_queries = np.flatnonzero(~np.isfinite(block).all(axis=1)).tolist()
    bad_targets = torch.nonzero(~torch.isfinite(target_boxes_cxcywh.cpu()).all(-1)).flatten().tolist()
    where = f"image {image_index}" + (f", query group {group} of {num_groups}" if num_groups > 1 else "")
    message = (
        f"Hungarian matching cost is NaN or inf for {where} at query indices {bad_queries}: the logits or "
        "pred_boxes of those queries are not finite (the model has likely diverged; lower the learning rate "
        "or check the inputs)."
    )
    if bad_targets:
        message += f" Target boxes {bad_targets} of that image are not finite: check its labels."
    raise ValueError(message)


def _check_inputs(logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]], num_groups: int) -> None:
    if logits.ndim != 3 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must have shape (batch_size, num_queries, num_labels + 1), got {tuple(logits.shape)}."
        )
    if pred_boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            f"pred_boxes must have shape (batch_size, num_queries, 4) = {(*logits.shape[:2], 4)} to match "
            f"logits, got {tuple(pred_boxes.shape)}."
        )
    if len(targets) != logits.shape[0]:
        raise ValueError(f"Got {len(targets)} target dicts for a batch of {logits.shape[0]} images.")
    if num_groups < 1 or logits.shape[1] % num_groups:
        raise ValueError(f"num_groups={num_groups} must be >= 1 and divide num_queries={logits.shape[1]}.")
    validate_labels(targets, logits.shape[0], num_labels=logits.shape[-1] - 1, name="targets")
