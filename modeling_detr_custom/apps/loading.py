"""Loading a saved detector for the apps (evaluate, predict), with one-line errors for damaged folders."""

from __future__ import annotations

from typing import Any

from image_processing import DetrCustomImageProcessor
from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection

__all__ = ["load_detector"]


def load_detector(checkpoint: str) -> tuple[DetrCustomForObjectDetection, Any]:
    """The model and image processor saved in `checkpoint` (a folder or Hub id).

    Raises:
        ValueError: one line naming the checkpoint when its weights are truncated or unreadable, or do not fit its
            `config.json` (files of different models mixed in one folder).
    """
    model = DetrCustomForObjectDetection.from_pretrained(checkpoint)  # its own one-line errors for damaged weights
    processor = DetrCustomImageProcessor.from_pretrained(checkpoint)
    return model, processor
