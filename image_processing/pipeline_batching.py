"""Batching this processor's images in transformers' pipelines: pad to the largest image and return `pixel_mask`.

transformers' pipelines collate a batch with `pipelines.base.pad_collate_fn`, which concatenates `pixel_values`
and so fails on images of different sizes ("Sizes of tensors must match"); `pixel_mask` would be padded along the
height only. `install_pipeline_collate` wraps that function once: for a processor whose class sets
`pads_pipeline_batches = True`, `pixel_values` and `pixel_mask` are padded bottom/right with zeros by the
processor's `pad` (the padding of a mixed-size training batch); every other key, and every other processor, goes
through transformers' collate unchanged.

Only third-party imports: copied next to Hub checkpoints for `trust_remote_code` (where it installs itself too).
"""

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["install_pipeline_collate"]

_PADDED_KEYS = ("pixel_values", "pixel_mask")


def install_pipeline_collate() -> None:
    """Wraps `transformers.pipelines.base.pad_collate_fn` (once per process; a no-op if transformers has none)."""
    try:
        from transformers.pipelines import base
    except ImportError:
        return
    original = getattr(base, "pad_collate_fn", None)
    if original is None or getattr(original, "pads_pixel_mask", False):
        return

    def pad_collate_fn(tokenizer: Any, feature_extractor: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        collate = original(tokenizer, feature_extractor)
        if not getattr(feature_extractor, "pads_pipeline_batches", False):
            return collate

        def inner(items: list[dict[str, Any]]) -> dict[str, Any]:
            images = [item["pixel_values"][0] for item in items]  # (3, H_i, W_i) each: one image per item
            padded = feature_extractor.pad(images, return_tensors="pt")
            rest = collate([{k: v for k, v in item.items() if k not in _PADDED_KEYS} for item in items])
            masks = [item.get("pixel_mask") for item in items]
            pixel_mask = padded["pixel_mask"]
            if all(mask is not None for mask in masks):  # keep each image's own mask inside its region
                for index, mask in enumerate(masks):
                    height, width = mask.shape[-2:]
                    pixel_mask[index, :height, :width] = mask[0]
            pixel_values = padded["pixel_values"].to(images[0].dtype)
            return {**rest, "pixel_values": pixel_values, "pixel_mask": pixel_mask.to(torch.int64)}

        return inner

    pad_collate_fn.pads_pixel_mask = True
    pad_collate_fn.__doc__ = original.__doc__
    base.pad_collate_fn = pad_collate_fn
