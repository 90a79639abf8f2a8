"""Box-aware training augmentation: boxes follow the pixels, crops keep objects, determinism, errors."""

from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from image_processing.augmentation import (
    DEFAULT_CROP_RANGE,
    DEFAULT_CROP_SCALES,
    DEFAULT_MAX_SIZE,
    DEFAULT_SCALES,
    Compose,
    RandomHorizontalFlip,
    RandomResize,
    RandomSelect,
    RandomSizeCrop,
    crop,
    hflip,
    make_detr_train_transform,
    resize,
)
from image_processing.sizes import get_size_with_aspect_ratio
from modeling_detr_custom import DetrCustomImageProcessor

SMALL_RECIPE = {"scales": (96, 112, 128), "max_size": 200, "crop_scales": (80, 96), "crop_range": (48, 80)}
# Non-overlapping rectangles (x, y, w, h) with unique colours on a black 160 x 120 image.
RECTANGLES = [(10, 12, 40, 30), (70, 8, 25, 50), (110, 70, 40, 35), (20, 70, 30, 20)]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _painted_sample() -> tuple[PIL.Image.Image, dict[str, Any]]:
    pixels = np.zeros((120, 160, 3), dtype=np.uint8)
    objects = []
    for j, ((x, y, w, h), colour) in enumerate(zip(RECTANGLES, COLOURS)):
        pixels[y : y + h, x : x + w] = colour
        polygon = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        objects.append(
            {
                "bbox": [x, y, w, h],
                "category_id": 10 + j,
                "area": float(w * h),
                "iscrowd": int(j == 3),
                "segmentation": polygon,
            }
        )
    return PIL.Image.fromarray(pixels), {"image_id": 3, "annotations": objects}


def _colour_extent(
    image: PIL.Image.Image, colour: tuple[int, int, int], threshold: int = 40
) -> tuple[int, int, int, int] | None:
    """xyxy extent (pixel edges) of the pixels within `threshold` of `colour` (max over channels), or None."""
    distance = np.abs(np.asarray(image, dtype=np.int32) - np.array(colour)).max(axis=-1)
    ys, xs = np.nonzero(distance < threshold)
    if len(xs) == 0:
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _assert_boxes_match_pixels(image: PIL.Image.Image, annotations: dict[str, Any], tolerance: float) -> None:
    """Every box lies inside the image and matches the extent of its colour within `tolerance` pixels; a sliver
    thinner than the resize blur only needs partially coloured pixels inside it; crowd flags stay attached."""
    width, height = image.size
    for obj in annotations["annotations"]:
        x, y, w, h = obj["bbox"]
        assert 0 <= x and 0 <= y and x + w <= width + 1e-3 and y + h <= height + 1e-3, obj
        assert w > 0 and h > 0
        colour = COLOURS[obj["category_id"] - 10]
        if min(w, h) <= tolerance:
            window = image.crop((int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))))
            assert _colour_extent(window, colour, threshold=250) is not None, obj
        else:
            extent = _colour_extent(image, colour)
            assert extent is not None, f"box {obj} has no pixels of its colour"
            assert max(abs(a - b) for a, b in zip((x, y, x + w, y + h), extent)) <= tolerance, (obj, extent)
        assert obj["iscrowd"] == int(obj["category_id"] == 13)
    kept = {obj["category_id"] - 10 for obj in annotations["annotations"]}
    for j, colour in enumerate(COLOURS):  # an object whose pixels are still visible must not have been dropped
        assert j in kept or _colour_extent(image, colour) is None, j


def test_hflip_resize_crop_move_boxes_with_pixels() -> None:
    image, annotations = _painted_sample()
    _assert_boxes_match_pixels(image, annotations, tolerance=0)
    flipped, flipped_annotations = hflip(image, annotations)
    _assert_boxes_match_pixels(flipped, flipped_annotations, tolerance=0)
    resized, resized_annotations = resize(image, annotations, 90, max_size=1000)
    assert resized.size == (120, 90)
    _assert_boxes_match_pixels(resized, resized_annotations, tolerance=1.0)
    assert resized_annotations["annotations"][0]["area"] == pytest.approx(1200 * 0.75 * 0.75)
    cropped, cropped_annotations = crop(image, annotations, top=20, left=30, height=60, width=100)
    assert cropped.size == (100, 60)
    _assert_boxes_match_pixels(cropped, cropped_annotations, tolerance=0)
    first = cropped_annotations["annotations"][0]
    assert first["bbox"] == [0.0, 0.0, 20.0, 22.0] and first["area"] == 440.0  # clipped, area recomputed
    assert [obj["category_id"] for obj in cropped_annotations["annotations"]] == [10, 11, 12, 13]


def test_crop_drops_objects_cut_out_together_with_their_fields() -> None:
    image, annotations = _painted_sample()
    _, cropped = crop(image, annotations, top=0, left=60, height=60, width=45)
    assert [(obj["category_id"], obj["iscrowd"]) for obj in cropped["annotations"]] == [(11, 0)]
    assert "segmentation" not in cropped["annotations"][0]


@pytest.mark.parametrize("recipe", [SMALL_RECIPE, {}])
def test_train_transform_keeps_boxes_inside_and_consistent_with_pixels(recipe: dict[str, Any]) -> None:
    image, annotations = _painted_sample()
    transform = make_detr_train_transform(**recipe)
    scales = recipe.get("scales", DEFAULT_SCALES)
    max_size = recipe.get("max_size", DEFAULT_MAX_SIZE)
    generator = torch.Generator().manual_seed(0)
    for _ in range(16 if recipe else 6):
        out_image, out_annotations = transform(image, annotations, generator)
        assert min(out_image.size) in scales or max(out_image.size) >= max_size - 1
        assert max(out_image.size) <= max_size
        _assert_boxes_match_pixels(out_image, out_annotations, tolerance=1.5 * max(out_image.size) / 160 + 1)
        assert any(obj["iscrowd"] == 0 for obj in out_annotations["annotations"])


def test_random_size_crop_retries_instead_of_cutting_out_every_object() -> None:
    pixels = np.zeros((200, 200, 3), dtype=np.uint8)
    annotations = {"image_id": 1, "annotations": [{"bbox": [150, 150, 45, 45], "category_id": 1}]}
    image = PIL.Image.fromarray(pixels)
    generator = torch.Generator().manual_seed(0)
    cropper = RandomSizeCrop(40, 60, max_tries=50)
    cropped_sizes = set()
    for _ in range(40):
        out_image, out_annotations = cropper(image, annotations, generator)
        assert len(out_annotations["annotations"]) == 1
        cropped_sizes.add(out_image.size)
    assert len(cropped_sizes) > 1  # it did crop, around the object
    stubborn = RandomSizeCrop(10, 10, max_tries=1)  # a 10 px window rarely overlaps the object: falls back
    results = [stubborn(image, annotations, generator) for _ in range(20)]
    assert all(len(a["annotations"]) == 1 for _, a in results)
    assert any(img.size == (200, 200) for img, _ in results)
    empty = {"image_id": 2, "annotations": []}
    assert RandomSizeCrop(10, 10)(image, empty, generator)[0].size == (10, 10)  # no objects: crops freely


def test_small_images_and_small_scales() -> None:
    image = PIL.Image.new("RGB", (30, 20))
    annotations = {"image_id": 1, "annotations": [{"bbox": [2, 2, 10, 10], "category_id": 0, "area": 100.0}]}
    out_image, _ = RandomSizeCrop(48, 80)(image, annotations, torch.Generator().manual_seed(0))
    assert out_image.size == (30, 20)  # smaller than min_size: crops within the image instead of raising
    out_image, out_annotations = resize(image, annotations, 128, max_size=160)
    assert out_image.size[::-1] == get_size_with_aspect_ratio(20, 30, 128, 160) == (107, 160)
    assert out_annotations["annotations"][0]["bbox"] == pytest.approx(
        [2 * 160 / 30, 2 * 107 / 20, 10 * 160 / 30, 10 * 107 / 20]
    )


def test_deterministic_under_a_seeded_generator() -> None:
    image, annotations = _painted_sample()
    transform = make_detr_train_transform(**SMALL_RECIPE)

    def run(seed: int) -> list[tuple[bytes, Any]]:
        generator = torch.Generator().manual_seed(seed)
        return [(img.tobytes(), ann) for img, ann in (transform(image, annotations, generator) for _ in range(6))]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_default_recipe_and_composition() -> None:
    transform = make_detr_train_transform()
    flip, select = transform.transforms
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(select, RandomSelect) and select.p == 0.5
    assert isinstance(select.first, RandomResize) and select.first.sizes == tuple(range(480, 801, 32))
    assert select.first.max_size == 1333
    assert isinstance(select.second, Compose)
    first_resize, size_crop, last_resize = select.second.transforms
    assert first_resize.sizes == DEFAULT_CROP_SCALES and first_resize.max_size is None
    assert (size_crop.min_size, size_crop.max_size) == DEFAULT_CROP_RANGE == (384, 600)
    assert last_resize.sizes == DEFAULT_SCALES and last_resize.max_size == 1333


def test_transform_then_processor_gives_labels_of_the_transformed_image() -> None:
    image, annotations = _painted_sample()
    out_image, out_annotations = make_detr_train_transform(**SMALL_RECIPE)(
        image, annotations, torch.Generator().manual_seed(3)
    )
    labels = DetrCustomImageProcessor()(out_image, out_annotations, do_resize=False)["labels"][0]
    width, height = out_image.size
    non_crowd = [obj for obj in out_annotations["annotations"] if not obj["iscrowd"]]
    expected = torch.tensor([[x + w / 2, y + h / 2, w, h] for x, y, w, h in (o["bbox"] for o in non_crowd)])
    torch.testing.assert_close(labels["boxes"], expected / torch.tensor([width, height, width, height]))
    assert labels["size"].tolist() == [height, width]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RandomHorizontalFlip(1.5), "Probability"),
        (lambda: RandomResize([]), "sizes"),
        (lambda: RandomResize([0, 10]), "sizes"),
        (lambda: RandomResize([10], max_size=-1), "max_size"),
        (lambda: RandomSizeCrop(50, 40), "min_size"),
        (lambda: RandomSizeCrop(10, 20, max_tries=0), "max_tries"),
        (lambda: make_detr_train_transform(crop_range=(10,)), "crop_range"),
    ],
)
def test_bad_arguments_raise(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs_raise() -> None:
    image, annotations = _painted_sample()
    with pytest.raises(TypeError, match="PIL image"):
        hflip(np.asarray(image), annotations)
    bad = {"image_id": 9, "annotations": [{"bbox": [1, 1, 5, -2], "category_id": 1}]}
    with pytest.raises(ValueError, match="image_id 9, annotation 0"):
        make_detr_train_transform()(image, bad, torch.Generator().manual_seed(0))
