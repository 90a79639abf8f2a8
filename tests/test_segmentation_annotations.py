"""Segmentation annotations in the image processor and the augmentation: polygons, RLE, panoptic PNGs."""

import numpy as np
import PIL.Image
import pytest
import torch
from pycocotools import mask as coco_mask
from transformers import DetrImageProcessor

from image_processing.augmentation import crop, hflip, make_detr_train_transform, resize
from image_processing.segmentation_masks import decode_segmentation
from modeling_detr_custom import DetrCustomImageProcessor

HEIGHT, WIDTH = 40, 60
POLYGON = [[10.0, 5.0, 40.0, 5.0, 40.0, 25.0, 10.0, 25.0]]  # a 30x20 rectangle at (10, 5)


def _image(seed: int = 0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def _detection_annotation(segmentation) -> dict:
    return {
        "image_id": 7,
        "annotations": [
            {"bbox": [10.0, 5.0, 30.0, 20.0], "category_id": 2, "area": 600.0, "iscrowd": 0,
             "segmentation": segmentation},
            {"bbox": [44.0, 20.0, 12.0, 15.0], "category_id": 1, "area": 180.0, "iscrowd": 0,
             "segmentation": [[44.0, 20.0, 56.0, 20.0, 50.0, 35.0]]},
        ],
    }  # fmt: skip


def test_polygon_masks_match_transformers_resized_and_padded() -> None:
    size = {"shortest_edge": 80, "longest_edge": 200}
    images = [_image(), _image(1).resize((50, 40))]
    second = {"image_id": 8, "annotations": [_detection_annotation(POLYGON)["annotations"][1]]}
    annotations = [_detection_annotation(POLYGON), second]
    ours = DetrCustomImageProcessor(size=size)(images, annotations, return_segmentation_masks=True)
    theirs = DetrImageProcessor(size=size)(images, annotations, return_segmentation_masks=True, return_tensors="pt")
    for mine, reference in zip(ours["labels"], theirs["labels"]):
        assert mine["masks"].shape == (len(reference["masks"]), *ours["pixel_values"].shape[-2:])
        assert mine["masks"].dtype == torch.uint8 and mine["masks"].sum() > 0
        torch.testing.assert_close(mine["masks"].bool(), reference["masks"].bool(), rtol=0, atol=0)
    # An image without objects (transformers' processor raises on it): empty masks of the padded size.
    empty = DetrCustomImageProcessor(size=size)(
        images, [annotations[0], {"image_id": 9, "annotations": []}], return_segmentation_masks=True
    )
    assert empty["labels"][1]["masks"].shape == (0, *empty["pixel_values"].shape[-2:])


def test_rle_and_array_masks_decode_to_the_polygon_mask() -> None:
    polygon_mask = decode_segmentation(POLYGON, HEIGHT, WIDTH, "test")
    assert polygon_mask.sum() > 500
    compressed = coco_mask.encode(np.asfortranarray(polygon_mask.astype(np.uint8)))
    np.testing.assert_array_equal(decode_segmentation(compressed, HEIGHT, WIDTH, "test"), polygon_mask)
    np.testing.assert_array_equal(decode_segmentation(polygon_mask, HEIGHT, WIDTH, "test"), polygon_mask)
    with pytest.raises(ValueError, match="annotation 3: 'segmentation' must be polygons"):
        decode_segmentation("nope", HEIGHT, WIDTH, "annotation 3")
    with pytest.raises(ValueError, match="differs from the image"):
        decode_segmentation({"size": [4, 4], "counts": compressed["counts"]}, HEIGHT, WIDTH, "test")


def _write_panoptic(folder) -> dict:
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    ids[5:25, 10:40] = 1 + 256 * 3  # a thing segment (id 769)
    ids[30:, :] = 5  # a stuff segment
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    PIL.Image.fromarray(rgb).save(folder / "000007.png")
    segments = [
        {"id": 769, "category_id": 2, "bbox": [10, 5, 30, 20], "area": 600, "iscrowd": 0},
        {"id": 5, "category_id": 0, "bbox": [0, 30, 60, 10], "area": 600, "iscrowd": 0},
    ]
    return {"image_id": 7, "file_name": "000007.png", "segments_info": segments}


def test_panoptic_annotations_match_transformers(tmp_path) -> None:
    annotation = _write_panoptic(tmp_path)
    ours = DetrCustomImageProcessor(format="coco_panoptic", size={"shortest_edge": 80, "longest_edge": 200})
    theirs = DetrImageProcessor(format="coco_panoptic", size={"shortest_edge": 80, "longest_edge": 200})
    result = ours(_image(), annotation, masks_path=tmp_path)["labels"][0]
    expected = theirs(_image(), annotation, masks_path=tmp_path, return_tensors="pt")["labels"][0]
    assert result["class_labels"].tolist() == expected["class_labels"].tolist() == [2, 0]
    torch.testing.assert_close(result["masks"].bool(), expected["masks"].bool(), rtol=0, atol=0)
    torch.testing.assert_close(result["boxes"], expected["boxes"], atol=1e-6, rtol=0)  # unpadded: the same boxes


def test_panoptic_errors_name_the_problem(tmp_path) -> None:
    annotation = _write_panoptic(tmp_path)
    processor = DetrCustomImageProcessor(format="coco_panoptic")
    with pytest.raises(ValueError, match="needs masks_path"):
        processor(_image(), annotation)
    missing = {**annotation, "segments_info": [{"id": 99, "category_id": 1}]}
    with pytest.raises(ValueError, match="segment id 99 does not occur"):
        processor(_image(), missing, masks_path=tmp_path)
    with pytest.raises(ValueError, match="cannot read the panoptic PNG"):
        processor(_image(), {**annotation, "file_name": "absent.png"}, masks_path=tmp_path)
    without = {"image_id": 3, "annotations": [{"bbox": [1, 1, 5, 5], "category_id": 0}]}
    with pytest.raises(ValueError, match="image_id 3, annotation 0: no 'segmentation'"):
        DetrCustomImageProcessor()(_image(), without, return_segmentation_masks=True)


def _mask_boxes(annotations: dict) -> list[list[float]]:
    boxes = []
    for obj in annotations["annotations"]:
        rows, columns = np.nonzero(obj["segmentation"])
        boxes.append([columns.min(), rows.min(), columns.max() + 1 - columns.min(), rows.max() + 1 - rows.min()])
    return boxes


def test_augmentation_keeps_array_masks_aligned_with_boxes() -> None:
    mask = decode_segmentation(POLYGON, HEIGHT, WIDTH, "test")
    annotation = _detection_annotation(mask)
    annotation["annotations"].pop()  # one rectangle: its mask's bounding box is its box
    image = _image()
    for transformed_image, transformed in (
        hflip(image, annotation),
        resize(image, annotation, 80),
        crop(image, annotation, 8, 15, 20, 30),
    ):
        assert transformed["annotations"][0]["segmentation"].shape == (
            transformed_image.height,
            transformed_image.width,
        )
        np.testing.assert_allclose(_mask_boxes(transformed), [transformed["annotations"][0]["bbox"]], atol=1.0)
    generator = torch.Generator().manual_seed(0)
    transform = make_detr_train_transform(scales=(48, 64), max_size=120, crop_scales=(48,), crop_range=(30, 40))
    for _ in range(5):
        augmented_image, augmented = transform(image, annotation, generator)
        for obj in augmented["annotations"]:
            assert obj["segmentation"].shape == (augmented_image.height, augmented_image.width)
        np.testing.assert_allclose(_mask_boxes(augmented), [o["bbox"] for o in augmented["annotations"]], atol=1.5)
