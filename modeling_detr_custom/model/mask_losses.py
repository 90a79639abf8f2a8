"""Segmentation loss: the DETR set loss plus sigmoid focal and dice losses on the masks of matched queries.

As the original (`models/segmentation.py`): the predicted masks of the final decoder layer's matched queries are
upsampled bilinearly to the padded input size, and compared with their targets by a sigmoid focal loss (alpha 0.25,
gamma 2; mean over pixels) and a dice loss, both summed over the pairs and divided by num_boxes. One deliberate
difference: the original counts the padding of a batch as background pixels of every mask, so the same image gives
a different loss in another batch; here padded pixels (`pixel_mask == 0`, or outside the target mask's own extent)
never count: the focal loss is the mean over the image's real pixels and the dice sums run over them only. On an
unpadded batch both are the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .criterion import SetCriterion, sigmoid_focal_loss
from .validation import check_non_negative

__all__ = ["SegmentationCriterion", "dice_loss", "masked_sigmoid_focal_loss"]

_FOCAL_ALPHA, _FOCAL_GAMMA = 0.25, 2.0  # the original's mask focal loss


class SegmentationCriterion(SetCriterion):
    """`SetCriterion` plus `loss_mask` (sigmoid focal) and `loss_dice` on the final layer's matched masks.

    Args:
        num_labels, matcher, **kwargs: As [`SetCriterion`].
        mask_loss_coefficient: Weight of `loss_mask` in the total loss.
        dice_loss_coefficient: Weight of `loss_dice` in the total loss.
    """

    def __init__(
        self, *args: object, mask_loss_coefficient: float = 1.0, dice_loss_coefficient: float = 1.0, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)
        coefficients = {"mask_loss_coefficient": mask_loss_coefficient, "dice_loss_coefficient": dice_loss_coefficient}
        check_non_negative("SegmentationCriterion ", coefficients)
        self.weight_dict.update(loss_mask=float(mask_loss_coefficient), loss_dice=float(dice_loss_coefficient))

    def forward(  # type: ignore[override]
        self,
        logits: Tensor,
        pred_boxes: Tensor,
        targets: list[dict[str, Tensor]],
        auxiliary_outputs: list[dict[str, Tensor]] | None = None,
        num_query_groups: int = 1,
        *,
        pred_masks: Tensor,
        pixel_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The detection loss of [`SetCriterion.forward`] plus `loss_mask` and `loss_dice`.

        Args:
            logits, pred_boxes, auxiliary_outputs, num_query_groups: As [`SetCriterion.forward`].
            targets: As [`SetCriterion.forward`], each with `masks` `(n_i, h_i, w_i)` (bool or 0/1) at the input
                resolution, `h_i <= height` and `w_i <= width` (smaller masks cover the top-left corner).
            pred_masks: Mask logits `(batch_size, num_queries, height / 4, width / 4)` (any size: they are
                upsampled to the input size).
            pixel_mask: `(batch_size, height, width)`, 1 on real pixels, 0 on padding; its size is the input size.
                None: every pixel inside the target masks' extent is real, and the input size is the largest mask.

        Returns:
            `(loss, loss_dict)` with `loss_mask` and `loss_dice` added to both (weighted in `loss`).

        Raises:
            ValueError: a target has no `masks`, or masks of the wrong count or larger than the input.
        """
        loss, loss_dict, matches, num_boxes = self._losses_and_matches(
            logits, pred_boxes, targets, auxiliary_outputs, num_query_groups
        )
        final = slice(len(matches.layer) - matches.pairs_per_layer, None)  # pairs are stored layer after layer
        image, query, target = matches.image[final], matches.query[final], matches.target[final]
        target_masks, valid = _padded_targets(targets, pixel_mask, pred_masks.device)  # (T, H, W), (B, H, W)
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            matched = pred_masks[image, query].float()[:, None]  # (P, 1, h, w)
            matched = F.interpolate(matched, size=target_masks.shape[-2:], mode="bilinear", align_corners=False)
            matched, matched_valid = matched[:, 0].flatten(1), valid[image].flatten(1)  # (P, H*W)
            matched_targets = target_masks[target].flatten(1)
            loss_dict["loss_mask"] = masked_sigmoid_focal_loss(matched, matched_targets, matched_valid) / num_boxes
            loss_dict["loss_dice"] = dice_loss(matched, matched_targets, matched_valid) / num_boxes
        loss = loss + sum(self.weight_dict[name] * loss_dict[name] for name in ("loss_mask", "loss_dice"))
        return loss, loss_dict


def masked_sigmoid_focal_loss(mask_logits: Tensor, target_masks: Tensor, valid: Tensor) -> Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2) averaged over each mask's valid pixels, summed over masks.

    Args:
        mask_logits: `(num_masks, num_pixels)` logits.
        target_masks: `(num_masks, num_pixels)` 0/1 floats.
        valid: `(num_masks, num_pixels)` 0/1 floats; only pixels with 1 count.

    Returns:
        A scalar (0 with a gradient graph when there are no masks).
    """
    loss = sigmoid_focal_loss(mask_logits, target_masks, _FOCAL_ALPHA, _FOCAL_GAMMA) * valid
    return (loss.sum(1) / valid.sum(1).clamp(min=1)).sum()


def dice_loss(mask_logits: Tensor, target_masks: Tensor, valid: Tensor) -> Tensor:
    """The original's dice loss, `1 - (2 |p t| + 1) / (|p| + |t| + 1)` per mask over its valid pixels, summed.

    Args:
        mask_logits: `(num_masks, num_pixels)` logits (p = their sigmoid).
        target_masks: `(num_masks, num_pixels)` 0/1 floats.
        valid: `(num_masks, num_pixels)` 0/1 floats; only pixels with 1 count.

    Returns:
        A scalar (0 with a gradient graph when there are no masks).
    """
    probabilities = mask_logits.sigmoid() * valid
    target_masks = target_masks * valid
    numerator = 2 * (probabilities * target_masks).sum(1)
    denominator = probabilities.sum(1) + target_masks.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum()


def _padded_targets(
    targets: list[dict[str, Tensor]], pixel_mask: Tensor | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """All target masks padded to the input size `(total_targets, H, W)` float, and the valid pixels `(B, H, W)`."""
    for index, target in enumerate(targets):
        masks = target.get("masks")
        if not isinstance(masks, Tensor) or masks.ndim != 3 or len(masks) != len(target["class_labels"]):
            found = "missing" if masks is None else f"shape {tuple(getattr(masks, 'shape', ()))}"
            raise ValueError(
                f"labels[{index}]['masks'] must be a tensor of shape ({len(target['class_labels'])}, height, width) "
                f"(one mask per class label) for the segmentation loss, got {found}."
            )
    if pixel_mask is not None:
        height, width = pixel_mask.shape[-2:]
    else:
        height = max(target["masks"].shape[1] for target in targets)
        width = max(target["masks"].shape[2] for target in targets)
    padded = torch.zeros(sum(len(target["masks"]) for target in targets), height, width, device=device)
    extent = torch.zeros(len(targets), height, width, device=device)
    start = 0
    for index, target in enumerate(targets):
        masks = target["masks"]
        mask_height, mask_width = masks.shape[1:]
        if mask_height > height or mask_width > width:
            raise ValueError(
                f"labels[{index}]['masks'] are {mask_height}x{mask_width}, larger than the {height}x{width} input."
            )
        padded[start : start + len(masks), :mask_height, :mask_width] = masks.to(device, torch.float32)
        extent[index, :mask_height, :mask_width] = 1
        start += len(masks)
    valid = extent if pixel_mask is None else extent * pixel_mask.to(device, torch.float32)
    return padded, valid
