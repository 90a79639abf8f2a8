"""Instance and panoptic masks from COCO annotations: polygons, RLE, binary arrays, and panoptic PNGs.

The one place that reads a COCO `segmentation` field and a panoptic PNG of segment ids. A panoptic annotation
becomes a COCO detection annotation whose objects carry their binary mask as `segmentation`, so augmentation and
the processor treat both formats the same way. Only sibling imports and third-party packages (pycocotools is
imported when polygons or RLE are decoded): copied next to Hub checkpoints for `trust_remote_code`.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor

__all__ = ["decode_segmentation", "masks_tensor", "panoptic_to_detection", "rgb_to_id"]


def rgb_to_id(color: np.ndarray) -> np.ndarray:
    """Segment ids of a panoptic PNG `(H, W, 3)` uint8: `R + 256 G + 256^2 B` (the COCO panoptic encoding)."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """One object's mask `(height, width)` bool from its COCO `segmentation`.

    Args:
        segmentation: Polygons (`[[x0, y0, x1, y1, ...], ...]`), RLE (`{"size": [h, w], "counts": ...}`,
            compressed or not), or a binary `(height, width)` array or tensor.
        height, width: The image size.
        where: Names the object in error messages.

    Raises:
        ValueError: starting with `where`: an unknown form, or a mask of another size than the image.
    """
    if isinstance(segmentation, (np.ndarray, Tensor)):
        mask = np.asarray(segmentation.cpu() if isinstance(segmentation, Tensor) else segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"{where}: the mask has shape {mask.shape}, but the image is {height}x{width}.")
        return mask.astype(bool)
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, Mapping) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"{where}: RLE size {segmentation['size']} differs from the image, {height}x{width}.")
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(rle, height, width)
        return coco_mask.decode(rle).astype(bool)
    if isinstance(segmentation, Sequence) and segmentation and all(_is_polygon(p) for p in segmentation):
        rles = coco_mask.frPyObjects([list(map(float, polygon)) for polygon in segmentation], height, width)
        return coco_mask.decode(coco_mask.merge(rles)).astype(bool)
    raise ValueError(
        f"{where}: 'segmentation' must be polygons [[x0, y0, x1, y1, ...], ...], an RLE dict with 'size' and "
        f"'counts', or a {height}x{width} binary array; got {type(segmentation).__name__}."
    )


def _is_polygon(polygon: Any) -> bool:
    return isinstance(polygon, Sequence) and len(polygon) >= 6 and len(polygon) % 2 == 0


def panoptic_to_detection(annotation: Any, masks_path: str | Path | None, index: int = 0) -> dict[str, Any]:
    """A COCO panoptic annotation as a COCO detection annotation with binary masks as `segmentation`.

    Args:
        annotation: `{"image_id": int, "file_name": "<png>", "segments_info": [{"id", "category_id", "area"?,
            "iscrowd"?, ...}, ...]}`, as in `panoptic_<split>.json`.
        masks_path: Folder of the PNGs (`annotations/panoptic_<split>/`).
        index: Position of the image in the batch, for error messages.

    Returns:
        `{"image_id", "annotations": [{"bbox", "category_id", "area", "iscrowd", "segmentation": (H, W) bool}]}`;
        `bbox` is computed from the mask as the original does (see below), a missing `area` is its pixel count.

    Raises:
        ValueError: a missing key, `masks_path`, or PNG, or a segment id absent from the PNG.
    """
    if not isinstance(annotation, Mapping) or not {"image_id", "file_name", "segments_info"} <= set(annotation):
        found = sorted(annotation) if isinstance(annotation, Mapping) else type(annotation).__name__
        raise ValueError(
            f"Panoptic annotation {index} must be a dict with 'image_id', 'file_name' and 'segments_info'; got {found}."
        )
    if masks_path is None:
        raise ValueError("format='coco_panoptic' needs masks_path, the folder of the panoptic PNGs.")
    path = Path(masks_path) / annotation["file_name"]
    try:
        with PIL.Image.open(path) as png:
            ids = rgb_to_id(np.asarray(png.convert("RGB")))
    except OSError as error:
        raise ValueError(f"image_id {annotation['image_id']!r}: cannot read the panoptic PNG {path}: {error}") from None
    objects = []
    for j, segment in enumerate(annotation["segments_info"]):
        where = f"image_id {annotation['image_id']!r}, segment {j}"
        if not isinstance(segment, Mapping) or "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{where}: a segment needs 'id' and 'category_id'.")
        mask = ids == int(segment["id"])
        if not mask.any():
            raise ValueError(f"{where}: segment id {segment['id']} does not occur in {path}.")
        rows, columns = np.nonzero(mask)
        # From the mask, with the last pixel's coordinate as the far edge: the original's (and transformers')
        # `masks_to_boxes`, one pixel smaller than the segment's own COCO `bbox`.
        bbox = [columns.min(), rows.min(), columns.max() - columns.min(), rows.max() - rows.min()]
        objects.append(
            {
                "bbox": [float(value) for value in bbox],
                "category_id": segment["category_id"],
                "area": segment.get("area", float(mask.sum())),
                "iscrowd": segment.get("iscrowd", 0),
                "segmentation": mask,
            }
        )
    return {"image_id": annotation["image_id"], "annotations": objects}


def masks_tensor(annotation: Mapping[str, Any], height: int, width: int, index: int = 0) -> Tensor:
    """`(n, height, width)` bool masks of every object of a COCO detection annotation, in order.

    Raises:
        ValueError: naming the image and object without `segmentation`, or with a malformed one.
    """
    masks = []
    for j, obj in enumerate(annotation["annotations"]):
        where = f"image_id {annotation.get('image_id')!r}, annotation {j}"
        if obj.get("segmentation") is None:
            raise ValueError(f"{where}: no 'segmentation' (return_segmentation_masks=True needs one per object).")
        masks.append(torch.from_numpy(decode_segmentation(obj["segmentation"], height, width, where)))
    return torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.bool)
