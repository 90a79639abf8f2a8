"""The DETR model: configuration, modeling, backbone, transformer, matcher, loss and box operations.

These files (not this `__init__`) are what `save_pretrained` copies flat next to a Hub checkpoint for
`trust_remote_code`, so they import each other as siblings (`from .backbone import ...`) and nothing else of
the package.
"""

from .configuration_detr_custom import DetrCustomConfig
from .modeling_detr_custom import (
    DetrCustomForObjectDetection,
    DetrCustomModel,
    DetrCustomModelOutput,
    DetrCustomObjectDetectionOutput,
    DetrCustomPreTrainedModel,
)
from .modeling_segmentation import DetrCustomForSegmentation, DetrCustomSegmentationOutput

__all__ = [
    "DetrCustomConfig",
    "DetrCustomForObjectDetection",
    "DetrCustomForSegmentation",
    "DetrCustomModel",
    "DetrCustomModelOutput",
    "DetrCustomObjectDetectionOutput",
    "DetrCustomPreTrainedModel",
    "DetrCustomSegmentationOutput",
]
