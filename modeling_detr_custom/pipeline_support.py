"""Make transformers' `pipeline("object-detection")` treat this model like a built-in detector.

Two behaviours of transformers 5.x would otherwise hit every pipeline user of a custom detector:

1. `pipeline()` softly tries to load a video processor. For a folder whose `preprocessor_config.json` has an
   `AutoImageProcessor` entry in `auto_map`, it derives a non-existent remote `...VideoProcessor` class and, unless
   `trust_remote_code` was given, *prompts on stdin* whether to run remote code (a 15 s hang in a terminal).
   Registering our config with an empty video-processor mapping tells transformers there is local code and no video
   processor, so the lookup fails fast and silently, as it does for transformers' own DETR.
2. `ObjectDetectionPipeline` checks the model's class name against a static list of built-in detectors and logs
   an error ("... is not supported for object-detection") although everything works. That one message, for this
   model only, is filtered out.

This module is imported by the modeling module, so it also runs for checkpoints loaded with `trust_remote_code`.
"""

from __future__ import annotations

import logging

__all__ = ["register_pipeline_support"]


class _DropUnsupportedModelError(logging.Filter):
    def __init__(self, class_name: str) -> None:
        super().__init__()
        self.message_start = f"The model '{class_name}' is not supported for"

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.message_start)


def register_pipeline_support(config_class: type, model_class_name: str) -> None:
    """Register `config_class` with no video processor and silence the pipeline's class-name check for it."""
    try:
        from transformers import AutoVideoProcessor

        AutoVideoProcessor.register(config_class, video_processor_classes={}, exist_ok=True)
    except (ImportError, AttributeError, TypeError, ValueError):  # other transformers versions: nothing to fix
        pass
    pipeline_logger = logging.getLogger("transformers.pipelines.base")
    if not any(isinstance(f, _DropUnsupportedModelError) for f in pipeline_logger.filters):
        pipeline_logger.addFilter(_DropUnsupportedModelError(model_class_name))
