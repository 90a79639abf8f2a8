"""Contrastive denoising training (DN-DETR, DINO): noised ground-truth boxes as extra decoder queries.

Bipartite matching makes the early training of DETR unstable: a query matched to an object at one step may be
matched to another at the next, so its box regression target jumps. Denoising adds, in training only, queries
whose answer is known without matching: each ground-truth object is fed to the decoder as a query built from a
noised copy of its box and (sometimes flipped) label, and the query must reconstruct the true box and class.
Contrastive denoising (DINO) adds for every object a second, *negative* query whose box is noised further; it
must predict "no object", which teaches the model to reject a second, looser box near an object, the duplicates
a set-prediction model should not produce.

For `G` denoising groups and at most `M` objects per image in the batch, each image gets `G` groups of `2M`
queries (positives `0..M-1`, negatives `M..2M-1`, slots beyond the image's own objects are padding). A query's
content (the decoder input) is the embedding of its label, its position embedding an MLP of its noised box, and
its box is predicted relative to the noised box (`sigmoid(bbox_predictor(h) + logit(noised box))`), as the
matching queries predict theirs relative to their anchors.

No leakage: the groups are decoded in a decoder pass of their own, each group as its own batch entry with its
padding masked out, so the matching queries never see a denoising query (and cannot copy the answer from it) and
the groups never see each other; this is the attention mask of DN-DETR with the denoising-to-matching block
closed as well. Inference (eval mode) never builds these queries: the outputs, the post-processing and the cost
are those of the model without denoising; `denoising.*` weights are kept in the checkpoint only to resume training.

Only torch and the package's own modules are imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .box_refinement import refine_boxes

__all__ = ["DenoisingBatch", "DenoisingQueries", "decode_denoising", "denoising_predictions"]

# Noised boxes are clamped to keep their logits finite (and their sides positive).
_MIN_SIDE = 1e-3


@dataclass
class DenoisingBatch:
    """The denoising queries of one batch, `G` groups of `2M` slots per image, laid out `(B * G, 2M, ...)`
    image-major (as `repeat_interleave(G, 0)` lays out the encoder output).

    Attributes:
        content: `(B * G, 2M, d_model)` decoder input, the label embeddings.
        position: `(B * G, 2M, d_model)` query position embeddings of the noised boxes.
        reference_logits: `(B * G, 2M, 4)` logits of the noised `(cx, cy, w, h)` boxes.
        valid: `(B * G, 2M)` bool, False on padding slots (never attended to, never in the loss).
        matches: Per image `(query indices into G * 2M, target indices)` of the positive queries.
        num_groups: `G`.
    """

    content: Tensor
    position: Tensor
    reference_logits: Tensor
    valid: Tensor
    matches: list[tuple[Tensor, Tensor]]
    num_groups: int


class DenoisingQueries(nn.Module):
    """Builds the noised queries (training only; see the module docstring).

    Args:
        num_labels: Object classes.
        hidden_size: `d_model`.
        num_groups: Denoising groups `G` (each holds every object of the image once, as a positive and a negative).
        box_noise_scale: Corners move by up to this fraction of the box's half width/height for positives, by
            between 1x and 2x that for negatives (DINO: 1.0).
        label_noise_ratio: Twice the probability that a label is replaced by a random class (DINO: 0.5).
    """

    def __init__(
        self, num_labels: int, hidden_size: int, num_groups: int, box_noise_scale: float, label_noise_ratio: float
    ) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.num_groups = num_groups
        self.box_noise_scale = box_noise_scale
        self.label_noise_ratio = label_noise_ratio
        self.label_embeddings = nn.Embedding(num_labels, hidden_size)
        self.box_embeddings = nn.Sequential(nn.Linear(4, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))

    def extra_repr(self) -> str:
        return (
            f"num_groups={self.num_groups}, box_noise_scale={self.box_noise_scale}, "
            f"label_noise_ratio={self.label_noise_ratio}"
        )

    def forward(self, labels: list[dict[str, Tensor]], generator: torch.Generator | None = None) -> DenoisingBatch:
        """Noised queries for `labels` (one dict per image, `class_labels` `(n_i,)`, `boxes` `(n_i, 4)` cxcywh).

        A batch without any object still gets one (padding) slot per group: every process of a distributed run
        then uses the denoising weights and computes the same loss terms at every step.
        """
        counts = [len(target["class_labels"]) for target in labels]
        most = max([1, *counts])
        device = self.label_embeddings.weight.device
        batch_size, groups = len(labels), self.num_groups
        # Every image's objects padded to `most`, then repeated per group and as positive + negative: (B, G, 2M)
        class_labels = torch.zeros(batch_size, most, dtype=torch.int64, device=device)
        boxes_cxcywh = torch.full((batch_size, most, 4), 0.5, device=device)
        for image, target in enumerate(labels):
            class_labels[image, : counts[image]] = target["class_labels"]
            boxes_cxcywh[image, : counts[image]] = target["boxes"].to(boxes_cxcywh.dtype)
        is_object = torch.arange(most, device=device)[None] < torch.tensor(counts, device=device)[:, None]  # (B, M)
        class_labels = class_labels[:, None, :].repeat(1, groups, 2)  # (B, G, 2M)
        boxes_cxcywh = boxes_cxcywh[:, None, :].repeat(1, groups, 2, 1)  # (B, G, 2M, 4)
        valid = is_object[:, None, :].repeat(1, groups, 2)  # (B, G, 2M)
        negative = (torch.arange(2 * most, device=device) >= most).expand_as(valid)

        noised_labels = self._noise_labels(class_labels, generator)
        noised_boxes = self._noise_boxes(boxes_cxcywh, negative, generator)
        # Slot 0 of every group stays attendable, so that an image without objects has no all-masked attention.
        attendable = valid.clone()
        attendable[..., 0] = True
        return DenoisingBatch(
            content=self.label_embeddings(noised_labels).flatten(0, 1),  # (B*G, 2M, D)
            position=self.box_embeddings(noised_boxes).flatten(0, 1),  # (B*G, 2M, D)
            reference_logits=torch.logit(noised_boxes).flatten(0, 1),  # (B*G, 2M, 4)
            valid=attendable.flatten(0, 1),
            matches=_positive_matches(counts, most, groups, device),
            num_groups=groups,
        )

    def _noise_labels(self, class_labels: Tensor, generator: torch.Generator | None) -> Tensor:
        flip = _uniform(class_labels.shape, class_labels.device, generator) < 0.5 * self.label_noise_ratio
        random_labels = torch.randint(
            0, self.num_labels, class_labels.shape, device=class_labels.device, generator=generator
        )
        return torch.where(flip, random_labels, class_labels)

    def _noise_boxes(self, boxes_cxcywh: Tensor, negative: Tensor, generator: torch.Generator | None) -> Tensor:
        """Moves each corner by `scale * half side * u`: `u` in `[0, 1)` for positives, `[1, 2)` for negatives,
        random sign, as DINO; returns clamped `(cx, cy, w, h)`, shape of the input."""
        half_sides = boxes_cxcywh[..., 2:].repeat(1, 1, 1, 2) / 2  # (B, G, 2M, 4): w/2, h/2, w/2, h/2
        magnitude = _uniform(boxes_cxcywh.shape, boxes_cxcywh.device, generator) + negative[..., None].float()
        sign = torch.where(_uniform(boxes_cxcywh.shape, boxes_cxcywh.device, generator) < 0.5, -1.0, 1.0)
        corners = box_cxcywh_to_xyxy(boxes_cxcywh) + sign * magnitude * half_sides * self.box_noise_scale
        noised = box_xyxy_to_cxcywh(corners.clamp(0.0, 1.0))
        # Corners may cross when a box is noised hard: keep sides positive, centres inside the image.
        sides = noised[..., 2:].abs().clamp(min=_MIN_SIDE, max=1 - _MIN_SIDE)
        centres = noised[..., :2].clamp(_MIN_SIDE, 1 - _MIN_SIDE)
        return torch.cat([centres, sides], dim=-1)


def _uniform(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, device=device, generator=generator)


def _positive_matches(counts: list[int], most: int, groups: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Per image: the positive query of object `j` in group `g` is `g * 2M + j` of the image's `G * 2M` queries."""
    matches = []
    for count in counts:
        objects = torch.arange(count, device=device)
        queries = (torch.arange(groups, device=device)[:, None] * 2 * most + objects[None]).flatten()
        matches.append((queries, objects.repeat(groups)))
    return matches


def denoising_predictions(
    hidden_states: Tensor,
    batch: DenoisingBatch,
    class_head: Callable[[Tensor], Tensor],
    box_head: Callable[[Tensor], Tensor],
    box_refinement: str = "none",
) -> tuple[Tensor, Tensor]:
    """Class logits and boxes of the denoising queries, every layer, laid out as the matching queries' outputs.

    Args:
        hidden_states: `(L, B * G, 2M, D)` decoder outputs of the denoising queries.
        batch: The queries they came from; boxes are predicted relative to `batch.reference_logits`.
        class_head: Hidden states to class logits `(..., num_labels + 1)`.
        box_head: Hidden states to box logit offsets `(..., 4)`.
        box_refinement: As `DetrCustomConfig.box_refinement`: with refinement each layer refines the previous
            layer's box, starting from the noised box.

    Returns:
        Logits `(L, B, G * 2M, num_labels + 1)` and normalised `(cx, cy, w, h)` boxes `(L, B, G * 2M, 4)`.
    """
    offsets = box_head(hidden_states)
    if box_refinement == "none":
        boxes = (offsets + batch.reference_logits).sigmoid()
    else:
        boxes = refine_boxes(offsets, batch.reference_logits, box_refinement)
    num_layers, batch_groups, num_slots = hidden_states.shape[:3]
    batch_size = batch_groups // batch.num_groups

    def by_image(tensor: Tensor) -> Tensor:  # (L, B*G, 2M, X) -> (L, B, G*2M, X), groups of an image side by side
        return tensor.reshape(num_layers, batch_size, batch.num_groups * num_slots, tensor.shape[-1])

    return by_image(class_head(hidden_states)), by_image(boxes)


def decode_denoising(
    decoder: nn.Module, encoder_hidden_states: Tensor, position_embeddings: Tensor, key_padding_mask: Tensor | None,
    denoising: DenoisingBatch,
) -> Tensor:  # fmt: skip
    """Every decoder layer's output `(L, B * G, 2M, D)` for the denoising queries, each group its own batch entry:
    no attention to the matching queries or to other groups."""

    def repeat(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.repeat_interleave(denoising.num_groups, 0)

    return decoder(
        denoising.position, repeat(encoder_hidden_states), repeat(position_embeddings), repeat(key_padding_mask),
        output_intermediate=True, initial_hidden_states=denoising.content, query_padding_mask=denoising.valid,
    ).intermediate_hidden_states  # fmt: skip
