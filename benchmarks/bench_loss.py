"""Matcher + loss alone (item 6): our HungarianMatcher + SetCriterion against transformers' ForObjectDetectionLoss.

A batch of 8 images with 0 to 50 boxes each, 100 queries, 91 classes and the auxiliary losses of 6 decoder layers
(6 Hungarian matchings per image), forward and backward, from the same predictions and labels. The total losses
must agree before anything is timed.
"""

from __future__ import annotations

import torch
from bench_common import Row, interleaved_seconds, row_from_seconds
from torch import Tensor
from transformers import DetrConfig
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

from modeling_detr_custom.model.criterion import SetCriterion
from modeling_detr_custom.model.matcher import HungarianMatcher

__all__ = ["loss_rows"]

BATCH_SIZE, NUM_QUERIES, NUM_LABELS, DECODER_LAYERS, MAX_BOXES = 8, 100, 91, 6, 50


def _make_predictions_and_labels(seed: int = 0) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Per-layer logits `(L, B, Q, C + 1)` and boxes `(L, B, Q, 4)` (leaf tensors), and labels with 0-50 boxes."""
    generator = torch.Generator().manual_seed(seed)
    shape = (DECODER_LAYERS, BATCH_SIZE, NUM_QUERIES)
    logits = torch.randn(*shape, NUM_LABELS + 1, generator=generator).requires_grad_(True)
    boxes = (0.2 + 0.5 * torch.rand(*shape, 4, generator=generator)).requires_grad_(True)
    counts = torch.randint(0, MAX_BOXES + 1, (BATCH_SIZE,), generator=generator).tolist()
    counts[0], counts[-1] = 0, MAX_BOXES  # both ends of the range
    labels = [
        {
            "class_labels": torch.randint(0, NUM_LABELS, (count,), generator=generator),
            "boxes": 0.2 + 0.5 * torch.rand(count, 4, generator=generator),
        }
        for count in counts
    ]
    return logits, boxes, labels


def loss_rows(repeats: int) -> list[Row]:
    """Seconds per loss evaluation with backward, ours against transformers'."""
    logits, boxes, labels = _make_predictions_and_labels()
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher())
    config = DetrConfig(
        num_labels=NUM_LABELS, auxiliary_loss=True, decoder_layers=DECODER_LAYERS, use_timm_backbone=False
    )
    auxiliary = [{"logits": logits[index], "pred_boxes": boxes[index]} for index in range(DECODER_LAYERS - 1)]

    def ours() -> Tensor:
        loss = criterion(logits[-1], boxes[-1], labels, auxiliary)[0]
        loss.backward()
        return loss

    def theirs() -> Tensor:
        targets = [dict(target) for target in labels]
        loss = ForObjectDetectionLoss(
            logits[-1], targets, logits.device, boxes[-1], config, outputs_class=logits, outputs_coord=boxes
        )[0]
        loss.backward()
        return loss

    ours_loss, theirs_loss = ours().item(), theirs().item()
    if abs(ours_loss - theirs_loss) > 1e-4 * max(1.0, abs(theirs_loss)):
        raise RuntimeError(f"Matcher + loss: total loss {ours_loss:.6g} (ours) vs {theirs_loss:.6g} (transformers).")
    times = interleaved_seconds({"theirs": theirs, "ours": ours}, repeats)
    boxes_per_image = ", ".join(str(len(target["class_labels"])) for target in labels)
    case = f"matcher+loss+backward, {BATCH_SIZE} images, {DECODER_LAYERS} layers"
    note = f"boxes per image {boxes_per_image}; total loss {ours_loss:.5g} vs {theirs_loss:.5g}"
    return [row_from_seconds("6", case, times["ours"], times["theirs"], "s/call", target=2.0, note=note)]
