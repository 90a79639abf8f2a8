"""DetrCustomImageProcessor: sizes, pixel parity with transformers, masks, labels, inputs, errors, save/load."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor, DetrImageProcessor
from transformers.image_transforms import get_size_with_aspect_ratio as hf_get_size_with_aspect_ratio
from transformers.image_utils import get_image_size_for_max_height_width
from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

from image_processing.sizes import get_output_image_size, get_size_with_aspect_ratio
from modeling_detr_custom import DetrCustomImageProcessor

SMALL_SIZE = {"shortest_edge": 96, "longest_edge": 160}
# Non-square, mixed sizes, so that the batch is padded in both directions.
MIXED_SHAPES = [(48, 80), (90, 60), (64, 64), (30, 120)]
EDGES = [1, 2, 3, 7, 31, 64, 99, 100, 101, 333, 479, 480, 600, 799, 800, 801, 1000, 1332, 1333, 1334, 1335, 2000]


def _random_pil(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _random_annotation(image_id: int, height: int, width: int, num_boxes: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    objects = []
    for j in range(num_boxes):
        x, y = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
        w, h = rng.uniform(2, width - x), rng.uniform(2, height - y)
        objects.append({"bbox": [x, y, w, h], "category_id": j % 3, "area": w * h, "iscrowd": 0})
    return {"image_id": image_id, "annotations": objects}


def _mixed_batch(num_boxes: int = 3) -> tuple[list[PIL.Image.Image], list[dict[str, Any]]]:
    images = [_random_pil(h, w, seed=i) for i, (h, w) in enumerate(MIXED_SHAPES)]
    annotations = [_random_annotation(i, h, w, num_boxes, seed=i) for i, (h, w) in enumerate(MIXED_SHAPES)]
    return images, annotations


# ---------------------------------------------------------------------------------------------------------------
# Output sizes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shortest_edge, longest_edge", [(800, 1333), (96, 160), (128, 128)])
def test_shortest_longest_sizes_match_transformers_and_never_exceed_the_cap(
    shortest_edge: int, longest_edge: int
) -> None:
    for height in EDGES:
        for width in EDGES:
            ours = get_size_with_aspect_ratio(height, width, shortest_edge, longest_edge)
            theirs = hf_get_size_with_aspect_ratio((height, width), shortest_edge, longest_edge)
            assert max(ours) <= longest_edge and min(ours) >= 1, (height, width, ours)
            if max(theirs) <= longest_edge and min(theirs) >= 1:
                assert ours == theirs, (height, width)
            _check_shortest_longest_formula(height, width, shortest_edge, longest_edge, ours)


def _check_shortest_longest_formula(height: int, width: int, short_target: int, cap: int, out: tuple) -> None:
    """The resize formula written independently: short side to the target unless the long side would pass the
    cap, in which case the long side is the cap (or one less through float rounding) and the aspect ratio is kept."""
    short, long = min(height, width), max(height, width)
    out_short, out_long = (out[1], out[0]) if width < height else (out[0], out[1])
    if long / short * short_target <= cap:
        assert out_short == short_target and out_long == (
            long if short == short_target else int(short_target * long / short)
        )
    else:
        assert out_long in (cap - 1, cap) or (out_short, out_long) == (short, long) and long <= cap
        assert out_short == max(round(cap * short / long), 1)


def test_transformers_bug_cases_are_capped() -> None:
    # transformers returns these unchanged although the long side is above 1333 (REFERENCE.md item 6)
    assert hf_get_size_with_aspect_ratio((100, 1335), 800, 1333) == (100, 1335)
    assert get_size_with_aspect_ratio(100, 1335, 800, 1333) == (100, 1333)
    assert get_size_with_aspect_ratio(1335, 100, 800, 1333) == (1333, 100)
    processor = DetrCustomImageProcessor()
    batch = processor(torch.zeros(3, 100, 1335, dtype=torch.uint8))
    assert batch["pixel_values"].shape == (1, 3, 100, 1333)


@pytest.mark.parametrize(
    "size",
    [
        {"height": 50, "width": 70},
        {"max_height": 70, "max_width": 90},
        {"longest_edge": 100},
        {"shortest_edge": 40},
        SMALL_SIZE,
    ],
)
def test_every_size_mode_gives_the_formula_size(size: dict[str, int]) -> None:
    processor = DetrCustomImageProcessor(size=size)
    for height, width in [(48, 80), (90, 60), (7, 300), (1, 1), (64, 64)]:
        expected = get_output_image_size(height, width, size)
        batch = processor(torch.zeros(3, height, width, dtype=torch.uint8))
        assert batch["pixel_values"].shape[-2:] == expected
        if "height" in size:
            assert expected == (50, 70)
        elif "max_height" in size:
            reference = get_image_size_for_max_height_width((height, width), 70, 90)
            assert expected == tuple(max(v, 1) for v in reference)
        elif "longest_edge" in size and "shortest_edge" not in size:
            assert max(expected) == 100
            assert min(expected) == max(int(min(height, width) * 100 / max(height, width)), 1)
        elif "shortest_edge" in size and "longest_edge" not in size:
            assert min(expected) == 40


def test_do_resize_false_keeps_sizes() -> None:
    images, _ = _mixed_batch()
    batch = DetrCustomImageProcessor()(images, do_resize=False)
    for i, (height, width) in enumerate(MIXED_SHAPES):
        assert batch["pixel_mask"][i].sum() == height * width


# ---------------------------------------------------------------------------------------------------------------
# Pixel values and masks
# ---------------------------------------------------------------------------------------------------------------

# Measured max abs difference to transformers' torchvision backend: 2.4e-7 (float32 rounding of the fused
# multiply-add; the resized uint8 pixels are identical). The PIL backend (DetrImageProcessorPil) differs by up to
# 0.0175, one uint8 level, because PIL's bilinear filter rounds differently (see benchmarks/bench_image_processor.py).
PIXEL_TOLERANCE = 1e-5


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"size": SMALL_SIZE},
        {"size": SMALL_SIZE, "do_normalize": False},
        {"size": SMALL_SIZE, "do_normalize": False, "do_rescale": False},
        {"size": {"height": 40, "width": 50}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]},
        {"do_resize": False, "pad_size": {"height": 130, "width": 130}},
    ],
)
def test_pixel_values_match_transformers_torchvision_backend(settings: dict[str, Any]) -> None:
    images, _ = _mixed_batch()
    ours = DetrCustomImageProcessor(**settings)(images)
    theirs = DetrImageProcessor(**settings)(images, return_tensors="pt")
    assert ours["pixel_values"].shape == theirs["pixel_values"].shape
    assert (ours["pixel_values"] - theirs["pixel_values"]).abs().max() <= PIXEL_TOLERANCE
    assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    assert ours["pixel_values"].dtype == torch.float32 and ours["pixel_mask"].dtype == torch.int64


def test_masks_cover_exactly_the_real_pixels_and_padding_is_zero() -> None:
    images = [PIL.Image.new("RGB", (w, h), (255, 255, 255)) for h, w in MIXED_SHAPES]
    batch = DetrCustomImageProcessor(size=SMALL_SIZE)(images)
    pixel_values, pixel_mask = batch["pixel_values"], batch["pixel_mask"]
    assert pixel_values.shape[0] == len(images)
    for i, (height, width) in enumerate(MIXED_SHAPES):
        out_height, out_width = get_output_image_size(height, width, SMALL_SIZE)
        expected = torch.zeros(pixel_mask.shape[1:], dtype=torch.int64)
        expected[:out_height, :out_width] = 1
        assert torch.equal(pixel_mask[i], expected)
        assert (pixel_values[i][:, expected == 1] > 0).all()  # white is above the ImageNet mean
        assert (pixel_values[i][:, expected == 0] == 0).all()
    assert pixel_mask.shape[1:] == (
        max(get_output_image_size(h, w, SMALL_SIZE)[0] for h, w in MIXED_SHAPES),
        max(get_output_image_size(h, w, SMALL_SIZE)[1] for h, w in MIXED_SHAPES),
    )


def test_pad_size_and_pad_method() -> None:
    images, _ = _mixed_batch()
    processor = DetrCustomImageProcessor(size=SMALL_SIZE)
    batch = processor(images, pad_size={"height": 200, "width": 210})
    assert batch["pixel_values"].shape[-2:] == (200, 210)
    singles = [processor(image)["pixel_values"][0] for image in images]
    padded = processor.pad(singles)
    full = processor(images)
    torch.testing.assert_close(padded["pixel_values"], full["pixel_values"], rtol=0, atol=0)
    assert torch.equal(padded["pixel_mask"], full["pixel_mask"])
    as_lists = processor.pad(singles, return_tensors=None, pad_size={"height": 170, "width": 170})
    assert [tuple(v.shape) for v in as_lists["pixel_values"]] == [(3, 170, 170)] * len(images)


def test_do_pad_false_and_return_tensors_none() -> None:
    images, _ = _mixed_batch()
    processor = DetrCustomImageProcessor(size={"height": 32, "width": 48}, do_pad=False)
    batch = processor(images)
    assert batch["pixel_values"].shape == (len(images), 3, 32, 48) and batch["pixel_mask"].all()
    lists = DetrCustomImageProcessor(size=SMALL_SIZE)(images, do_pad=False, return_tensors=None)
    for pixel_values, (height, width) in zip(lists["pixel_values"], MIXED_SHAPES):
        assert pixel_values.shape[-2:] == get_output_image_size(height, width, SMALL_SIZE)


# ---------------------------------------------------------------------------------------------------------------
# Input types
# ---------------------------------------------------------------------------------------------------------------


def test_every_accepted_input_type_gives_the_same_output() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((45, 70, 1), 17, dtype=np.uint8)], axis=-1)
    readonly = rgb.copy()
    readonly.setflags(write=False)
    processor = DetrCustomImageProcessor(size=SMALL_SIZE)
    reference = processor(PIL.Image.fromarray(rgb))["pixel_values"]
    exact = {
        "numpy HWC": rgb,
        "numpy CHW": rgb.transpose(2, 0, 1).copy(),
        "torch CHW": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
        "torch HWC": torch.from_numpy(rgb),
        "numpy read-only": readonly,
        "numpy negative strides": np.ascontiguousarray(rgb[:, ::-1])[:, ::-1],
        "PIL RGBA": PIL.Image.fromarray(rgba, mode="RGBA"),
        "numpy RGBA": rgba,
        "list": [rgb],
        "4-D tensor": torch.from_numpy(rgb).permute(2, 0, 1)[None],
    }
    for name, image in exact.items():
        torch.testing.assert_close(processor(image)["pixel_values"], reference, rtol=0, atol=1e-6, msg=name)
    # Float and 16-bit inputs are resized as floats, uint8 as uint8 with torchvision's fixed-point kernel (as
    # transformers): they agree within one uint8 level.
    rounding = 1.01 / 255 / min(processor.image_std)
    approximate = {
        "numpy float32 [0, 1]": rgb.astype(np.float32) / 255,
        "torch float64 CHW": torch.from_numpy(rgb).permute(2, 0, 1).double() / 255,
        "numpy uint16": rgb.astype(np.uint16) * 257,
    }
    for name, image in approximate.items():
        for do_resize, tolerance in ((True, rounding), (False, 1e-5)):
            ours = processor(image, do_resize=do_resize)["pixel_values"]
            expected = processor(rgb, do_resize=do_resize)["pixel_values"]
            assert (ours - expected).abs().max() <= tolerance, name


def test_grayscale_and_16_bit_inputs() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (40, 60), dtype=np.uint8)
    processor = DetrCustomImageProcessor(size=SMALL_SIZE)
    reference = processor(np.repeat(gray[..., None], 3, axis=-1))["pixel_values"]
    for image in (gray, gray[..., None], torch.from_numpy(gray)[None], PIL.Image.fromarray(gray, mode="L")):
        torch.testing.assert_close(processor(image)["pixel_values"], reference, rtol=0, atol=1e-6)
    gray16 = gray.astype(np.uint16) * 257  # 16-bit copy of the same picture
    pil16 = PIL.Image.fromarray(gray16)
    assert pil16.mode.startswith("I;16")
    for image in (gray16, pil16):
        no_resize = processor(image, do_resize=False)["pixel_values"]
        torch.testing.assert_close(no_resize, processor(gray, do_resize=False)["pixel_values"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "images, error, match",
    [
        ([], ValueError, "empty"),
        ("image.jpg", TypeError, "Accepted"),
        ([np.zeros((8, 8, 3), dtype=np.uint8), "x"], TypeError, "Image 1"),
        (np.zeros((8, 8, 3), dtype=np.int64), TypeError, "uint8"),
        (np.full((8, 8, 3), 2.0, dtype=np.float32), ValueError, r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8, 5), dtype=np.uint8), ValueError, "Accepted"),
        (np.zeros((2, 2, 8, 8, 3), dtype=np.uint8), ValueError, "Accepted"),
        (np.zeros((0, 8, 3), dtype=np.uint8), ValueError, "empty"),
        (torch.zeros(3, 8, 8, dtype=torch.bool), TypeError, "uint8"),
    ],
)
def test_bad_images_raise_documented_errors(images: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DetrCustomImageProcessor()(images)


# ---------------------------------------------------------------------------------------------------------------
# Annotations and labels
# ---------------------------------------------------------------------------------------------------------------


def test_labels_follow_the_original_semantics() -> None:
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    annotation = {
        "image_id": 42,
        "annotations": [
            {"bbox": [20, 10, 40, 30], "category_id": 7, "area": 900.0, "iscrowd": 0},
            {"bbox": [0, 0, 50, 50], "category_id": 3, "area": 2500.0, "iscrowd": 1},  # crowd: excluded
            {"bbox": [180, 80, 50, 50], "category_id": 5, "area": 2500.0},  # clipped to the image
            {"bbox": [210, 10, 5, 5], "category_id": 2, "area": 25.0},  # outside: zero area after clipping
            {"bbox": [10, 10, 0, 20], "category_id": 2, "area": 0.0},  # zero width
        ],
    }
    labels = DetrCustomImageProcessor(size={"shortest_edge": 50, "longest_edge": 1000})(image, annotation)["labels"][0]
    assert labels["class_labels"].tolist() == [7, 5]
    assert labels["class_labels"].dtype == torch.int64 and labels["boxes"].dtype == torch.float32
    expected_xyxy = torch.tensor([[20.0, 10, 60, 40], [180, 80, 200, 100]])
    expected_cxcywh = torch.stack(
        [(expected_xyxy[:, 0] + expected_xyxy[:, 2]) / 400, (expected_xyxy[:, 1] + expected_xyxy[:, 3]) / 200,
         (expected_xyxy[:, 2] - expected_xyxy[:, 0]) / 200, (expected_xyxy[:, 3] - expected_xyxy[:, 1]) / 100], dim=1
    )  # fmt: skip
    torch.testing.assert_close(labels["boxes"], expected_cxcywh)
    torch.testing.assert_close(labels["area"], torch.tensor([900.0, 2500.0]) * 0.25)  # resized to 50 x 100
    assert labels["iscrowd"].tolist() == [0, 0] and labels["image_id"].tolist() == [42]
    assert labels["orig_size"].tolist() == [100, 200] and labels["size"].tolist() == [50, 100]
    absolute = DetrCustomImageProcessor(size={"shortest_edge": 50, "longest_edge": 1000}, do_convert_annotations=False)
    torch.testing.assert_close(absolute(image, annotation)["labels"][0]["boxes"], expected_xyxy / 2)


def test_labels_match_transformers_without_padding_and_ignore_padding() -> None:
    images, annotations = _mixed_batch(num_boxes=4)
    for image, annotation in zip(images, annotations):
        ours = DetrCustomImageProcessor(size=SMALL_SIZE)(image, annotation)["labels"][0]
        theirs = DetrImageProcessor(size=SMALL_SIZE, do_pad=False)(image, annotation, return_tensors="pt")["labels"][0]
        for key in ("class_labels", "boxes", "area", "image_id", "orig_size", "size"):
            torch.testing.assert_close(ours[key], theirs[key].to(ours[key].dtype), msg=key)
    padded = DetrCustomImageProcessor(size=SMALL_SIZE)(images, annotations)["labels"]
    for i, (image, annotation) in enumerate(zip(images, annotations)):
        alone = DetrCustomImageProcessor(size=SMALL_SIZE)(image, annotation)["labels"][0]
        torch.testing.assert_close(padded[i]["boxes"], alone["boxes"])  # padding never changes the boxes


def test_box_round_trip_through_post_processing_in_a_padded_mixed_batch() -> None:
    images, annotations = _mixed_batch(num_boxes=3)
    processor = DetrCustomImageProcessor(size=SMALL_SIZE)
    batch = processor(images, annotations)
    assert all(not bool(mask.all()) for mask in batch["pixel_mask"])  # every image is padded somewhere
    num_queries, num_classes = 5, 3
    logits = torch.full((len(images), num_queries, num_classes + 1), -10.0)
    logits[..., -1] = 10.0  # no object by default
    pred_boxes = torch.full((len(images), num_queries, 4), 0.5)
    for i, labels in enumerate(batch["labels"]):
        count = len(labels["boxes"])
        logits[i, :count, -1] = -10.0
        logits[i, torch.arange(count), labels["class_labels"]] = 10.0
        pred_boxes[i, :count] = labels["boxes"]
    outputs = DetrObjectDetectionOutput(logits=logits, pred_boxes=pred_boxes)
    results = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=MIXED_SHAPES)
    for result, annotation in zip(results, annotations):
        expected_xywh = torch.tensor([obj["bbox"] for obj in annotation["annotations"]])
        expected_xyxy = torch.cat([expected_xywh[:, :2], expected_xywh[:, :2] + expected_xywh[:, 2:]], dim=1)
        assert result["labels"].tolist() == [obj["category_id"] for obj in annotation["annotations"]]
        assert (result["boxes"] - expected_xyxy).abs().max() <= 1.0


@pytest.mark.parametrize(
    "annotation, match",
    [
        ({"image_id": 5, "annotations": [{"bbox": [1, 1, 2, 2], "category_id": 1}, {"category_id": 1}]},
         "image_id 5, annotation 1: missing 'bbox'"),
        ({"image_id": 5, "annotations": [{"bbox": [1, 1, 2, 2]}]}, "image_id 5, annotation 0: missing 'category_id'"),
        ({"image_id": 6, "annotations": [{"bbox": [1, 1, -2, 2], "category_id": 1}]},
         "image_id 6, annotation 0.*negative"),
        ({"image_id": 6, "annotations": [{"bbox": [1, float("nan"), 2, 2], "category_id": 1}]}, "image_id 6.*NaN"),
        ({"image_id": 6, "annotations": [{"bbox": [1, 2, 3], "category_id": 1}]},
         "image_id 6, annotation 0.*4 numbers"),
        ({"image_id": 6, "annotations": [{"bbox": [1, 2, 3, 4], "category_id": "cat"}]},
         "image_id 6, annotation 0: 'category_id' must be an int"),
        ({"image_id": 6, "annotations": [{"bbox": [1, 2, 3, 4], "category_id": 1, "iscrowd": 2}]},
         "image_id 6, annotation 0: 'iscrowd'"),
        ({"image_id": "a.jpg", "annotations": []}, "'image_id' must be an int"),
        ({"annotations": []}, "image_id"),
        ({"image_id": 7, "annotations": "none"}, "image_id 7.*list"),
    ],
)  # fmt: skip
def test_bad_annotations_name_the_image_and_annotation(annotation: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DetrCustomImageProcessor()(torch.zeros(3, 8, 8, dtype=torch.uint8), annotation)


def test_image_annotation_count_mismatch() -> None:
    images = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2
    with pytest.raises(ValueError, match="2 images but 1 annotations"):
        DetrCustomImageProcessor()(images, [{"image_id": 1, "annotations": []}])


def test_empty_annotations_give_empty_labels() -> None:
    labels = DetrCustomImageProcessor()(torch.zeros(3, 8, 8, dtype=torch.uint8), {"image_id": 1, "annotations": []})
    assert labels["labels"][0]["boxes"].shape == (0, 4) and labels["labels"][0]["class_labels"].shape == (0,)


# ---------------------------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------------------------


def _random_outputs(batch_size: int = 3, num_queries: int = 10, num_classes: int = 4) -> DetrObjectDetectionOutput:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch_size, num_queries, num_classes + 1, generator=generator) * 3
    centers = 0.25 + 0.5 * torch.rand(batch_size, num_queries, 2, generator=generator)
    sizes = 0.4 * torch.rand(batch_size, num_queries, 2, generator=generator)  # boxes inside the image
    return DetrObjectDetectionOutput(logits=logits, pred_boxes=torch.cat([centers, sizes], dim=-1))


@pytest.mark.parametrize(
    "target_sizes", [None, [(100, 200), (300, 150), (64, 64)], torch.tensor([[100, 200], [3, 5], [7, 9]])]
)
def test_post_processing_matches_transformers(target_sizes: Any) -> None:
    outputs = _random_outputs()
    ours = DetrCustomImageProcessor().post_process_object_detection(outputs, 0.3, target_sizes)
    theirs = DetrImageProcessor().post_process_object_detection(outputs, 0.3, target_sizes)
    assert sum(len(r["scores"]) for r in ours) > 3
    for mine, reference in zip(ours, theirs):
        for key in ("scores", "labels", "boxes"):
            torch.testing.assert_close(mine[key], reference[key], msg=key)


def test_post_processing_clips_accepts_any_output_object_and_top_k() -> None:
    processor = DetrCustomImageProcessor()
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    pred_boxes = torch.tensor([[[0.9, 0.5, 0.4, 1.2], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 1, 1]]])
    for outputs in (
        SimpleNamespace(logits=logits, pred_boxes=pred_boxes),
        {"logits": logits, "pred_boxes": pred_boxes},
    ):
        result = processor.post_process_object_detection(outputs, threshold=0.1, target_sizes=[(100, 200)])[0]
        assert result["labels"].tolist() == [0, 1, 0]  # query order; query 3 is "no object"
        torch.testing.assert_close(result["boxes"][0], torch.tensor([140.0, 0.0, 200.0, 100.0]))  # clipped
    top = processor.post_process_object_detection(outputs, threshold=0.1, target_sizes=[(100, 200)], top_k=2)[0]
    assert top["labels"].tolist() == [0, 1] and bool((top["scores"][:-1] >= top["scores"][1:]).all())
    relative = processor.post_process_object_detection(outputs, threshold=0.1)[0]
    assert relative["boxes"].max() <= 1.0 and relative["boxes"].min() >= 0.0


def test_post_processing_errors() -> None:
    processor, outputs = DetrCustomImageProcessor(), _random_outputs(batch_size=2)
    with pytest.raises(TypeError, match="logits"):
        processor.post_process_object_detection(SimpleNamespace(logits=outputs.logits))
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_object_detection(outputs, target_sizes=[(10, 10)])
    with pytest.raises(ValueError, match="top_k"):
        processor.post_process_object_detection(outputs, top_k=0)


# ---------------------------------------------------------------------------------------------------------------
# Options, config round trip, Auto classes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"size": {"shortest_edge": 10, "height": 3}}, ValueError, "keys"),
        ({"size": {"height": 0, "width": 3}}, ValueError, "positive"),
        ({"image_std": [0.1, 0.0, 0.2]}, ValueError, "image_std"),
        ({"image_mean": [0.1, 0.2]}, ValueError, "image_mean"),
        ({"resample": 3}, ValueError, "bilinear"),
        ({"pad_size": {"height": 10}}, ValueError, "pad_size"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DetrCustomImageProcessor(**kwargs)
    if "resample" not in kwargs and "format" not in kwargs:  # the same checks apply to per-call overrides
        with pytest.raises(error, match=match):
            DetrCustomImageProcessor()(torch.zeros(3, 8, 8, dtype=torch.uint8), **kwargs)


def test_bad_call_options_raise() -> None:
    processor, image = DetrCustomImageProcessor(), torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="Unknown option"):
        processor(image, do_center_crop=True)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(image, return_tensors="np")
    with pytest.raises(ValueError, match="Image 1 has size"):
        processor(
            [image, torch.zeros(3, 8, 20, dtype=torch.uint8)], do_resize=False, pad_size={"height": 10, "width": 10}
        )
    with pytest.raises(ValueError, match="different sizes"):
        processor([image, torch.zeros(3, 8, 20, dtype=torch.uint8)], do_resize=False, do_pad=False)


def test_save_load_round_trip_and_auto_image_processor(tmp_path: Path) -> None:
    processor = DetrCustomImageProcessor(
        size={"max_height": 90, "max_width": 120}, image_mean=[0.1, 0.2, 0.3], do_pad=False, rescale_factor=1 / 250
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"]["AutoImageProcessor"] == "image_processing_detr_custom.DetrCustomImageProcessor"
    copied = {"image_processing_detr_custom.py", "sizes.py", "image_inputs.py", "annotations.py", "post_processing.py"}
    assert copied <= {path.name for path in tmp_path.iterdir()}  # the processor and its sibling modules, flat
    for loaded in (DetrCustomImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is DetrCustomImageProcessor
        assert loaded.to_dict() == processor.to_dict()
        image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
        torch.testing.assert_close(loaded(image)["pixel_values"], processor(image)["pixel_values"], rtol=0, atol=0)


def test_loads_transformers_detr_configs(tmp_path: Path) -> None:
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 100}).save_pretrained(tmp_path)
    loaded = DetrCustomImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"shortest_edge": 64, "longest_edge": 100}
    legacy = DetrCustomImageProcessor(size=800, max_size=1000)  # facebook/detr-resnet-50's original config keys
    assert legacy.size == {"shortest_edge": 800, "longest_edge": 1000}


def test_trust_remote_code_loading_without_the_package(tmp_path: Path) -> None:
    processor = DetrCustomImageProcessor(size=SMALL_SIZE)
    processor.save_pretrained(tmp_path / "checkpoint")
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.save(image, tmp_path / "image.pt")
    torch.save(processor(image)["pixel_values"], tmp_path / "expected.pt")
    child = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_detr_custom"] = None  # the package must not be importable
        import torch
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "checkpoint")!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        pixel_values = processor(torch.load({str(tmp_path / "image.pt")!r}))["pixel_values"]
        assert torch.equal(pixel_values, torch.load({str(tmp_path / "expected.pt")!r}))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
