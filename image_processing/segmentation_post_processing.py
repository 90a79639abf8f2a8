"""Post-processing of segmentation outputs into panoptic, instance and semantic maps.

Signatures, outputs and numbers are those of transformers' `DetrImageProcessor` (5.x): scores are the softmax over
the classes, queries of the "no object" class or with `score <= threshold` are dropped, mask probabilities are
weighted by the scores and every pixel goes to the best query (`compute_segments`); segments whose pixels are not
mostly (`overlap_mask_area_threshold`) inside their own thresholded mask are dropped.

One addition, keyword-only: `processed_sizes`, the unpadded `(height, width)` of each image as fed to the model.
`pred_masks` cover the padded batch, and transformers resizes the whole padded map to the target size, which
squashes and shifts the segments of every image smaller than the batch (the box deviation of REFERENCE item 1, for
masks). With `processed_sizes`, the masks are first upsampled to the padded input and cropped to the image (as the
original `PostProcessSegm` / `PostProcessPanoptic`). Without it the numbers are transformers'. When the outputs
themselves carry `processed_sizes` (`DetrCustomForSegmentation` sets them for a padded batch, e.g. a mixed-size
`pipeline(..., batch_size=N)` batch), they are used unless the call passes its own.

Only sibling imports and third-party packages: copied next to Hub checkpoints for `trust_remote_code`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "binary_mask_to_rle",
    "post_process_instance_masks",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
]

Sizes = Tensor | Sequence[Sequence[int]] | None


def post_process_semantic_segmentation(
    outputs: Any, target_sizes: Sizes = None, return_segmentation_scores: bool = False, *, processed_sizes: Sizes = None
) -> list[Tensor] | list[dict[str, Tensor]]:
    """Per-pixel class maps: `sum_q softmax(class)[q, c] * sigmoid(mask)[q]`, argmax over the classes.

    Args:
        outputs: Anything with `logits` `(B, Q, num_labels + 1)` and `pred_masks` `(B, Q, h, w)`.
        target_sizes: `(height, width)` per image to resize to (bilinear on the scores); None keeps `(h, w)`.
        return_segmentation_scores: Return dicts with `segmentation` and `segmentation_scores`
            `(num_labels, height, width)` instead of the maps alone.
        processed_sizes: Unpadded input `(height, width)` per image (see the module docstring).

    Returns:
        Per image a `(height, width)` int64 class map (or a dict, see `return_segmentation_scores`).
    """
    logits, pred_masks = _segmentation_outputs(outputs)
    processed_sizes = _processed_sizes(outputs, processed_sizes)
    results = []
    for index, (image_logits, image_masks) in enumerate(zip(logits, pred_masks)):
        class_probabilities = image_logits.softmax(-1)[..., :-1]  # (Q, C)
        scores = torch.einsum("qc,qhw->chw", class_probabilities, image_masks.sigmoid())  # (C, h, w)
        size = _size_of(target_sizes, index, len(logits))
        scores = _crop_to_image(scores, processed_sizes, index, len(logits), size is not None)
        if size is not None:
            scores = nn.functional.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
        segmentation = scores.argmax(0)
        results.append({"segmentation": segmentation, "segmentation_scores": scores})
    return results if return_segmentation_scores else [result["segmentation"] for result in results]


def post_process_instance_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    target_sizes: Sizes = None,
    return_coco_annotation: bool | None = False,
    *,
    processed_sizes: Sizes = None,
) -> list[dict[str, Any]]:
    """Non-overlapping instance segments (every query its own segment), as transformers.

    Args:
        outputs: Anything with `logits` `(B, Q, num_labels + 1)` and `pred_masks` `(B, Q, h, w)`.
        threshold: Keep queries whose class score is above this.
        mask_threshold: Binarises the mask probabilities for the area check.
        overlap_mask_area_threshold: Drop a segment unless more than this fraction of its thresholded mask won
            its pixels.
        target_sizes: `(height, width)` per image to resize to; None keeps `(h, w)`.
        return_coco_annotation: Return the map as run-length encodings (one per segment id, as transformers).
        processed_sizes: Unpadded input `(height, width)` per image (see the module docstring).

    Returns:
        Per image `{"segmentation": (height, width) segment ids (0 = none; -1 everywhere when nothing is kept),
        "segments_info": [{"id", "label_id", "was_fused", "score"}]}`.
    """
    return _post_process_segments(
        outputs, threshold, mask_threshold, overlap_mask_area_threshold, set(), target_sizes, processed_sizes,
        return_coco_annotation=bool(return_coco_annotation),
    )  # fmt: skip


def post_process_panoptic_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
    target_sizes: Sizes = None,
    *,
    processed_sizes: Sizes = None,
) -> list[dict[str, Any]]:
    """Panoptic segments: as the instance ones, with the segments of each class in `label_ids_to_fuse` (the stuff
    classes) fused into one.

    Args:
        outputs, threshold, mask_threshold, overlap_mask_area_threshold, target_sizes, processed_sizes: As
            [`post_process_instance_segmentation`].
        label_ids_to_fuse: Labels whose segments are merged per image (stuff); None fuses nothing.

    Returns:
        As [`post_process_instance_segmentation`]; `was_fused` is True for the labels in `label_ids_to_fuse`.
    """
    return _post_process_segments(
        outputs, threshold, mask_threshold, overlap_mask_area_threshold, set(label_ids_to_fuse or ()), target_sizes,
        processed_sizes,
    )  # fmt: skip


def post_process_instance_masks(
    outputs: Any,
    threshold: float = 0.0,
    mask_threshold: float = 0.5,
    target_sizes: Sizes = None,
    *,
    processed_sizes: Sizes = None,
) -> list[dict[str, Tensor]]:
    """One binary mask per kept query, masks may overlap: the original `PostProcessSegm`, for mask AP.

    Scores and labels are those of `post_process_object_detection` (softmax, "no object" dropped, best class);
    each kept query's mask logits are cropped to the image (with `processed_sizes`), resized bilinearly to its
    target size, and thresholded after the sigmoid.

    Args:
        outputs: Anything with `logits` `(B, Q, num_labels + 1)` and `pred_masks` `(B, Q, h, w)`.
        threshold: Keep queries whose score is above this (0 keeps all, as COCO evaluation wants).
        mask_threshold: Probability above which a pixel belongs to the mask.
        target_sizes: `(height, width)` per image, usually the original sizes; None keeps the mask resolution.
        processed_sizes: Unpadded input `(height, width)` per image (see the module docstring).

    Returns:
        Per image `{"scores": (n,), "labels": (n,) int64, "masks": (n, height, width) bool}`.
    """
    logits, pred_masks = _segmentation_outputs(outputs)
    processed_sizes = _processed_sizes(outputs, processed_sizes)
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q)
    results = []
    for index, (image_scores, image_labels, image_masks) in enumerate(zip(scores, labels, pred_masks)):
        keep = image_scores > threshold
        size = _size_of(target_sizes, index, len(logits))
        masks = (
            _crop_to_image(image_masks[keep], processed_sizes, index, len(logits), size is not None)
            if keep.any()
            else image_masks[keep]
        )
        if size is not None and len(masks):
            masks = nn.functional.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]
        elif size is not None:
            masks = masks.new_zeros((0, *size))
        results.append(
            {"scores": image_scores[keep], "labels": image_labels[keep], "masks": masks.sigmoid() > mask_threshold}
        )
    return results


def _post_process_segments(
    outputs: Any,
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    label_ids_to_fuse: set[int],
    target_sizes: Sizes,
    processed_sizes: Sizes,
    return_coco_annotation: bool = False,
) -> list[dict[str, Any]]:
    logits, pred_masks = _segmentation_outputs(outputs)
    processed_sizes = _processed_sizes(outputs, processed_sizes)
    num_labels = logits.shape[-1] - 1
    scores, labels = logits.softmax(-1).max(-1)  # (B, Q)
    results = []
    for index, (image_scores, image_labels, image_masks) in enumerate(zip(scores, labels, pred_masks)):
        keep = (image_labels != num_labels) & (image_scores > threshold)
        size = _size_of(target_sizes, index, len(logits))
        if not bool(keep.any()):
            unresized = image_masks.shape[-2:] if processed_sizes is None else processed_sizes[index]
            height, width = size if size is not None else (int(unresized[0]), int(unresized[1]))
            results.append({"segmentation": torch.zeros((height, width)) - 1, "segments_info": []})
            continue
        kept_probabilities = _crop_to_image(
            image_masks[keep].sigmoid(), processed_sizes, index, len(logits), size is not None
        )
        segmentation, segments = _compute_segments(
            kept_probabilities, image_scores[keep], image_labels[keep], mask_threshold,
            overlap_mask_area_threshold, label_ids_to_fuse, size,
        )  # fmt: skip
        if return_coco_annotation:
            segmentation = [binary_mask_to_rle(segmentation == value) for value in torch.unique(segmentation)]
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


def _compute_segments(
    mask_probabilities: Tensor,
    scores: Tensor,
    labels: Tensor,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    label_ids_to_fuse: set[int],
    size: tuple[int, int] | None,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Every pixel to the query of highest `score * probability`; segments numbered from 1 in query order."""
    if size is not None:
        mask_probabilities = nn.functional.interpolate(
            mask_probabilities[None], size=size, mode="bilinear", align_corners=False
        )[0]
    weighted = mask_probabilities * scores[:, None, None]  # (K, H, W)
    owner = weighted.argmax(0)  # (H, W)
    segmentation = torch.zeros(owner.shape, dtype=torch.int32, device=owner.device)
    segments: list[dict[str, Any]] = []
    segment_of_fused_label: dict[int, int] = {}
    last_id = 0
    for query in range(len(labels)):
        label = int(labels[query])
        won = owner == query
        # transformers thresholds the score-weighted probabilities here (not the raw ones): kept as is.
        own_area = (weighted[query] >= mask_threshold).sum()
        won_area = won.sum()
        if won_area == 0 or own_area == 0 or not (won_area / own_area).item() > overlap_mask_area_threshold:
            continue
        if label in segment_of_fused_label:
            segment_id = segment_of_fused_label[label]
        else:
            last_id += 1
            segment_id = last_id
        segmentation[won] = segment_id
        fused = label in label_ids_to_fuse
        segments.append(
            {"id": segment_id, "label_id": label, "was_fused": fused, "score": round(scores[query].item(), 6)}
        )
        if fused:
            segment_of_fused_label[label] = segment_id
    return segmentation, segments


def binary_mask_to_rle(mask: Tensor | np.ndarray) -> list[int]:
    """Run-length encoding of a `(height, width)` 0/1 mask in row-major order (transformers' format)."""
    pixels = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask).astype(np.int64).flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return [int(run) for run in runs]


def _field(outputs: Any, name: str) -> Any:
    return outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)


def _processed_sizes(outputs: Any, processed_sizes: Sizes) -> Sizes:
    """The call's `processed_sizes`, else those the outputs carry (a padded batch), else None."""
    return processed_sizes if processed_sizes is not None else _field(outputs, "processed_sizes")


def _segmentation_outputs(outputs: Any) -> tuple[Tensor, Tensor]:
    def field(name: str) -> Any:
        return _field(outputs, name)

    logits, pred_masks = field("logits"), field("pred_masks")
    if not isinstance(logits, Tensor) or not isinstance(pred_masks, Tensor):
        raise TypeError(
            "`outputs` must have tensors `logits` (batch_size, num_queries, num_labels + 1) and `pred_masks` "
            f"(batch_size, num_queries, height, width) (a segmentation model's output); got {type(outputs).__name__}."
        )
    if logits.ndim != 3 or pred_masks.ndim != 4 or logits.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(
            f"`logits` must be (batch_size, num_queries, num_labels + 1) and `pred_masks` (batch_size, num_queries, "
            f"height, width); got {tuple(logits.shape)} and {tuple(pred_masks.shape)}."
        )
    return logits, pred_masks


def _size_of(sizes: Sizes, index: int, batch_size: int) -> tuple[int, int] | None:
    if sizes is None:
        return None
    if len(sizes) != batch_size:
        raise ValueError(f"Pass one (height, width) per image: got {len(sizes)} sizes for {batch_size} images.")
    height, width = (int(value) for value in sizes[index])
    if height < 1 or width < 1:
        raise ValueError(f"Sizes must be positive (height, width) pairs; got {(height, width)} for image {index}.")
    return height, width


def _crop_to_image(
    maps: Tensor, processed_sizes: Sizes, index: int, batch_size: int, resized_after: bool = False
) -> Tensor:
    """`(N, h, w)` maps over the padded input at stride 4 -> `(N, height, width)` over image `index` alone, or the
    maps unchanged when `processed_sizes` is None.

    Mask pixel `(r, c)` covers input pixels `[4r, 4r + 4)` whatever the padded size, so the maps are upsampled
    bilinearly to `(4 h, 4 w)` and cropped to the image (as the original `PostProcessSegm`).
    """
    if processed_sizes is None:
        return maps
    height, width = _size_of(processed_sizes, index, batch_size)
    if resized_after and (height, width) == (4 * maps.shape[-2], 4 * maps.shape[-1]):
        return maps  # the image fills the input and is resized next: the numbers of a call without processed_sizes
    if height > 4 * maps.shape[-2] or width > 4 * maps.shape[-1]:
        raise ValueError(
            f"processed_sizes[{index}] = {(height, width)} is larger than the padded input (at most "
            f"{(4 * maps.shape[-2], 4 * maps.shape[-1])}): pass the sizes of the images fed to the model."
        )
    full = nn.functional.interpolate(maps[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    return full[:, :height, :width]
