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
    try:
        model = DetrCustomForObjectDetection.from_pretrained(checkpoint)
        processor = DetrCustomImageProcessor.from_pretrained(checkpoint)
    except (OSError, ValueError):
        raise  # already one line naming the path (missing folder or file, bad JSON)
    except Exception as error:  # safetensors' SafetensorError, torch's RuntimeError for a shape mismatch, ...
        first_line = str(error).splitlines()[0] if str(error) else ""
        if "mismatch" in str(error) or "ignore_mismatched_sizes" in first_line:
            reason = "the weights' shapes do not match its config.json (files of different models in one folder?)"
        else:
            reason = f"the weights cannot be read ({type(error).__name__}: {first_line}); the file may be truncated"
        raise ValueError(f"Cannot load the model in {checkpoint}: {reason}.") from error
    return model, processor
