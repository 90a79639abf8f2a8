"""The one collate function: pad a list of processed images through the image processor, keep labels a list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["DetectionCollator"]


class DetectionCollator:
    """Collates `{"pixel_values": (3, H_i, W_i), "labels": dict}` items into a padded batch.

    Padding goes bottom/right through `processor.pad`, so `pixel_mask` marks real pixels (1) and padding (0);
    labels are left untouched (their boxes are relative to each unpadded image) and stay a list, because images
    hold different numbers of objects.

    Args:
        processor: An image processor with `pad(list_of_chw_tensors, return_tensors="pt")`.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Returns `pixel_values` `(B, 3, H, W)` float32, `pixel_mask` `(B, H, W)` int64 and `labels` (a list
        of the items' label dicts, when the items have labels).

        Raises:
            ValueError: For an empty batch or an item without `pixel_values`.
        """
        if len(examples) == 0:
            raise ValueError("Cannot collate an empty batch.")
        for index, example in enumerate(examples):
            if not isinstance(example.get("pixel_values"), torch.Tensor):
                raise ValueError(
                    f"Batch item {index} has no `pixel_values` tensor (keys: {sorted(example)}); collate items of "
                    "a DetectionSplit's `dataset`, not its `raw` rows."
                )
        padded = self.processor.pad([example["pixel_values"] for example in examples], return_tensors="pt")
        batch = {"pixel_values": padded["pixel_values"], "pixel_mask": padded["pixel_mask"]}
        with_labels = ["labels" in example for example in examples]
        if any(with_labels) and not all(with_labels):
            raise ValueError(f"Only some batch items have `labels` ({with_labels}); all or none must.")
        if all(with_labels):
            batch["labels"] = [example["labels"] for example in examples]
        return batch
