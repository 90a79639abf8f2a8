"""Steering the training augmentation: `--augment detr|light|none`, `--no_hflip`, a user's callable, and an
albumentations `Compose` with `bbox_params` whose boxes follow the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from image_processing.augmentation import LIGHT_SCALES
from modeling_detr_custom.data import load_detection_split
from modeling_detr_custom.data.albumentations_adapter import AlbumentationsTransform
from modeling_detr_custom.data.dataset import scaled_detr_train_transform, scaled_light_train_transform
from modeling_detr_custom.training.arguments import DetrTrainingArguments
from tests.test_transforms import COLOURS, _assert_boxes_match_pixels, _colour_extent, _painted_sample

SYNTHETIC = "synthetic:num_train=4,num_val=2,image_size=64,seed=4"


def _flipped(image) -> bool | None:
    """The red rectangle is painted left of the green one: a flip swaps them (None when a crop cut one out)."""
    red, green = _colour_extent(image, COLOURS[0]), _colour_extent(image, COLOURS[1])
    return None if red is None or green is None else red[0] > green[0]


@pytest.mark.parametrize("make", [scaled_detr_train_transform, scaled_light_train_transform])
def test_no_hflip_never_flips_and_the_default_does(make) -> None:
    flips: dict[bool, list[bool]] = {True: [], False: []}
    for hflip in (True, False):
        transform = make(120, hflip=hflip)
        for seed in range(32):
            image, annotations = transform(*_painted_sample(), torch.Generator().manual_seed(seed))
            _assert_boxes_match_pixels(image, annotations, tolerance=1.5 * max(image.size) / 160 + 1)
            if _flipped(image) is not None:
                flips[hflip].append(_flipped(image))
    assert len(flips[False]) >= 8 and not any(flips[False])
    assert len(flips[True]) >= 8 and 0 < sum(flips[True]) < len(flips[True])


def test_light_resizes_to_the_top_scales_without_cropping() -> None:
    transform = scaled_light_train_transform(800)
    sizes = set()
    for seed in range(16):
        image, annotations = transform(*_painted_sample(), torch.Generator().manual_seed(seed))
        sizes.add(min(image.size))
        assert len(annotations["annotations"]) == 4  # no crop: every object stays
        _assert_boxes_match_pixels(image, annotations, tolerance=6.0)
    assert sizes <= set(LIGHT_SCALES) and len(sizes) > 1


def test_named_augmentations_and_a_two_argument_callable_in_load_detection_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path))
    plain = load_detection_split(SYNTHETIC, "train", train=False)
    none = load_detection_split(SYNTHETIC, "train", train=True, augment="none")
    assert none.transform.augment is None
    torch.testing.assert_close(none.dataset[0]["pixel_values"], plain.dataset[0]["pixel_values"])
    light = load_detection_split(SYNTHETIC, "train", train=True, augment="light", hflip=False)
    assert "RandomHorizontalFlip" not in repr(light.transform.augment) and "RandomResize" in repr(
        light.transform.augment
    )
    assert "RandomSizeCrop" in repr(load_detection_split(SYNTHETIC, "train", train=True).transform.augment)
    with pytest.raises(ValueError, match="augment must be one of detr, light, none; got 'heavy'"):
        load_detection_split(SYNTHETIC, "train", train=True, augment="heavy")

    calls = []

    def grey(image, annotations):  # the torchvision-style signature, without a generator
        calls.append(annotations["image_id"])
        return image.convert("L").convert("RGB"), annotations

    custom = load_detection_split(SYNTHETIC, "train", train=True, augment=grey)
    pixels = custom.dataset[0]["pixel_values"]  # (3, H, W), normalised per channel
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (custom.processor.image_mean, custom.processor.image_std))
    rgb = pixels * std + mean
    assert calls and torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def test_training_arguments_name_the_augmentation() -> None:
    assert DetrTrainingArguments(augment="light", no_hflip=True).augment == "light"
    assert DetrTrainingArguments(no_augment=True).augment == "none"
    with pytest.raises(ValueError, match="--augment must be one of detr, light, none"):
        DetrTrainingArguments(augment="heavy")
    with pytest.raises(ValueError, match="--no_augment contradicts --augment light"):
        DetrTrainingArguments(augment="light", no_augment=True)


def test_train_script_passes_augment_and_no_hflip_to_the_training_split(tmp_path: Path, monkeypatch) -> None:
    from modeling_detr_custom.training.loop import _load_splits

    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path))
    train, evaluation = _load_splits(DetrTrainingArguments(data=SYNTHETIC, augment="light", no_hflip=True))
    assert repr(train.transform.augment).startswith("Compose([RandomResize(")
    assert evaluation.transform.augment is None


def _albumentations():
    """albumentations is the optional `augment` extra (`make install` installs it)."""
    return pytest.importorskip("albumentations")


def _albumentations_compose(box_format: str, *transforms, label_fields=("category_ids",)):
    A = _albumentations()
    return A.Compose(list(transforms), bbox_params=A.BboxParams(format=box_format, label_fields=list(label_fields)))


@pytest.mark.parametrize("box_format", ["coco", "pascal_voc", "yolo", "albumentations"])
@pytest.mark.parametrize("label_fields", [("category_ids",), ()], ids=["label_field", "extra_column"])
def test_albumentations_flip_and_resize_move_boxes_exactly(box_format: str, label_fields: tuple) -> None:
    A = _albumentations()
    compose = _albumentations_compose(
        box_format, A.HorizontalFlip(p=1.0), A.Resize(height=60, width=80), label_fields=label_fields
    )
    image, annotations = _painted_sample()
    out, out_annotations = AlbumentationsTransform(compose)(image, annotations, torch.Generator().manual_seed(0))
    assert out.size == (80, 60)
    expected = [
        [(160 - x - w) / 2, y / 2, w / 2, h / 2] for x, y, w, h in (o["bbox"] for o in annotations["annotations"])
    ]
    np.testing.assert_allclose([o["bbox"] for o in out_annotations["annotations"]], expected, atol=1e-4)
    assert [o["category_id"] for o in out_annotations["annotations"]] == [10, 11, 12, 13]
    assert [o["iscrowd"] for o in out_annotations["annotations"]] == [0, 0, 0, 1]
    assert out_annotations["annotations"][0]["area"] == pytest.approx(20 * 15, abs=1e-3)
    _assert_boxes_match_pixels(out, out_annotations, tolerance=1.0)


def test_albumentations_random_crops_keep_fields_with_their_boxes_and_are_seeded() -> None:
    A = _albumentations()
    compose = _albumentations_compose("coco", A.RandomCrop(height=70, width=90), A.HorizontalFlip(p=0.5))
    transform = AlbumentationsTransform(compose)
    results = []
    for seed in range(12):
        image, annotations = transform(*_painted_sample(), torch.Generator().manual_seed(seed))
        _assert_boxes_match_pixels(image, annotations, tolerance=0.01)  # also: objects still visible are kept
        results.append((np.asarray(image).tobytes(), annotations))
    again = transform(*_painted_sample(), torch.Generator().manual_seed(3))
    assert np.asarray(again[0]).tobytes() == results[3][0] and again[1] == results[3][1]
    assert len({r[0] for r in results}) > 6  # different seeds, different crops


def test_albumentations_in_a_data_set_and_without_bbox_params(tmp_path: Path, monkeypatch) -> None:
    A = _albumentations()
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path))
    compose = _albumentations_compose("coco", A.HorizontalFlip(p=1.0))
    flipped = load_detection_split(SYNTHETIC, "train", train=True, augment=compose)
    plain = load_detection_split(SYNTHETIC, "train", train=False)
    boxes, reference = flipped.dataset[0]["labels"]["boxes"], plain.dataset[0]["labels"]["boxes"]  # cxcywh
    torch.testing.assert_close(boxes[:, 0], 1 - reference[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(boxes[:, 1:], reference[:, 1:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="has no bbox_params"):
        load_detection_split(SYNTHETIC, "train", train=True, augment=A.Compose([A.HorizontalFlip(p=1.0)]))
