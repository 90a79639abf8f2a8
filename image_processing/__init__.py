"""DETR image processing: the image processor (pre- and post-processing) and the box-aware training augmentation.

Modules: `sizes` (output sizes, the 800/1333 default), `image_inputs` (PIL/numpy/tensor inputs of any bit depth),
`annotations` (COCO annotations -> targets, the one validation of an annotation), `post_processing` (outputs ->
scored boxes), `image_processing_detr_custom` (`DetrCustomImageProcessor`, tying them together) and
`augmentation` (the original DETR's training transforms, boxes moved with the pixels).

The first five are copied flat next to Hub checkpoints (`trust_remote_code`), so they import each other as
siblings and nothing from `modeling_detr_custom`. `modeling_detr_custom.DetrCustomImageProcessor` is the same
class as `image_processing.DetrCustomImageProcessor`.
"""

from .image_processing_detr_custom import DetrCustomImageProcessor
from .post_processing import post_process_object_detection
from .sizes import get_output_image_size, get_size_with_aspect_ratio

__all__ = [
    "DetrCustomImageProcessor",
    "get_output_image_size",
    "get_size_with_aspect_ratio",
    "post_process_object_detection",
]
