"""detr-custom: DETR (DEtection TRansformer) packaged for the Hugging Face ecosystem.

The parts, top to bottom: `apps` (predict, evaluate, convert, demo, the `detr-custom` command) use `training`
(the loops, checkpoints and Hub folders) and `evaluation`, which use `data`, the top-level `image_processing`
package and `model` (the files copied next to Hub checkpoints). See docs/ARCHITECTURE.md.

Importing the package registers the config, the models and the image processor with transformers' Auto classes,
and marks them for `register_for_auto_class`, so `save_pretrained` writes `auto_map` and copies the source files:
the saved folder then loads with `AutoModelForObjectDetection.from_pretrained(folder, trust_remote_code=True)`
where this package is not installed. Nothing else happens at import.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForInstanceSegmentation,
    AutoModelForObjectDetection,
    AutoModelForUniversalSegmentation,
)

from image_processing import DetrCustomImageProcessor
from modeling_detr_custom.model import (
    DetrCustomConfig,
    DetrCustomForObjectDetection,
    DetrCustomForSegmentation,
    DetrCustomModel,
    DetrCustomModelOutput,
    DetrCustomObjectDetectionOutput,
    DetrCustomPreTrainedModel,
    DetrCustomSegmentationOutput,
)

__all__ = [
    "DetrCustomConfig",
    "DetrCustomForObjectDetection",
    "DetrCustomForSegmentation",
    "DetrCustomImageProcessor",
    "DetrCustomModel",
    "DetrCustomModelOutput",
    "DetrCustomObjectDetectionOutput",
    "DetrCustomPreTrainedModel",
    "DetrCustomSegmentationOutput",
]


def _register_auto_classes() -> None:
    AutoConfig.register(DetrCustomConfig.model_type, DetrCustomConfig, exist_ok=True)
    AutoModel.register(DetrCustomConfig, DetrCustomModel, exist_ok=True)
    AutoModelForObjectDetection.register(DetrCustomConfig, DetrCustomForObjectDetection, exist_ok=True)
    # transformers maps DETR's segmentation model to AutoModelForImageSegmentation only; it also does the instance
    # and panoptic (universal) tasks, so the instance and universal segmentation Auto classes load it too.
    for auto_class in (
        AutoModelForImageSegmentation,
        AutoModelForInstanceSegmentation,
        AutoModelForUniversalSegmentation,
    ):
        auto_class.register(DetrCustomConfig, DetrCustomForSegmentation, exist_ok=True)
    AutoImageProcessor.register(
        DetrCustomConfig, image_processor_classes={"torchvision": DetrCustomImageProcessor}, exist_ok=True
    )
    # No video processor: without this entry `pipeline()` derives a remote `...VideoProcessor` class from the
    # image processor's `auto_map` and, unless `trust_remote_code` was given, prompts on stdin whether to run it.
    try:
        from transformers import AutoVideoProcessor

        AutoVideoProcessor.register(DetrCustomConfig, video_processor_classes={}, exist_ok=True)
    except (ImportError, AttributeError, TypeError, ValueError):  # other transformers versions: nothing to fix
        pass
    DetrCustomConfig.register_for_auto_class("AutoConfig")
    DetrCustomModel.register_for_auto_class("AutoModel")
    DetrCustomForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")
    DetrCustomForSegmentation.register_for_auto_class("AutoModelForImageSegmentation")
    DetrCustomImageProcessor.register_for_auto_class("AutoImageProcessor")


_register_auto_classes()
