"""detr-custom: DETR (DEtection TRansformer) packaged for the Hugging Face ecosystem.

Importing the package registers the config and models with transformers' Auto classes, and marks them for
`register_for_auto_class`, so `save_pretrained` writes `auto_map` and copies the modeling source files: the saved
folder then loads with `AutoModelForObjectDetection.from_pretrained(folder, trust_remote_code=True)` where this
package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection

from .configuration_detr_custom import DetrCustomConfig
from .modeling_detr_custom import (
    DetrCustomForObjectDetection,
    DetrCustomModel,
    DetrCustomModelOutput,
    DetrCustomObjectDetectionOutput,
    DetrCustomPreTrainedModel,
)

__all__ = [
    "DetrCustomConfig",
    "DetrCustomForObjectDetection",
    "DetrCustomModel",
    "DetrCustomModelOutput",
    "DetrCustomObjectDetectionOutput",
    "DetrCustomPreTrainedModel",
]

AutoConfig.register(DetrCustomConfig.model_type, DetrCustomConfig, exist_ok=True)
AutoModel.register(DetrCustomConfig, DetrCustomModel, exist_ok=True)
AutoModelForObjectDetection.register(DetrCustomConfig, DetrCustomForObjectDetection, exist_ok=True)
DetrCustomConfig.register_for_auto_class("AutoConfig")
DetrCustomModel.register_for_auto_class("AutoModel")
DetrCustomForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")

# ---- Image processor (issue 3): DetrCustomImageProcessor, registered for AutoImageProcessor -------------------
# `register_for_auto_class` makes `save_pretrained` write `auto_map` into preprocessor_config.json and copy
# image_processing_detr_custom.py (and box_ops.py, its only sibling import) for `trust_remote_code` loading.
from transformers import AutoImageProcessor  # noqa: E402

from .image_processing_detr_custom import DetrCustomImageProcessor  # noqa: E402

__all__ += ["DetrCustomImageProcessor"]
AutoImageProcessor.register(
    DetrCustomConfig, image_processor_classes={"torchvision": DetrCustomImageProcessor}, exist_ok=True
)
DetrCustomImageProcessor.register_for_auto_class("AutoImageProcessor")
