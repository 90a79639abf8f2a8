"""The synthetic shapes data set: COCO layout, determinism, negatives, visible-extent boxes, cache, CLI."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_detr_custom.data.synthetic import (
    CATEGORIES,
    SyntheticSpec,
    ensure_synthetic_dataset,
    generate_image,
    main,
    synthetic_cache_dir,
    write_synthetic_dataset,
)

SPEC = SyntheticSpec(num_train=24, num_val=8, image_size=64, seed=3)


def _load(folder: Path, split: str) -> dict:
    return json.loads((folder / "annotations" / f"instances_{split}.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), SPEC)


def test_layout_is_a_coco_folder_with_train_and_val(folder: Path) -> None:
    for split, count in (("train", SPEC.num_train), ("val", SPEC.num_val)):
        coco = _load(folder, split)
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
        assert [c["name"] for c in coco["categories"]] == ["rectangle", "ellipse", "triangle"]
        assert len(coco["images"]) == count == len(list((folder / split).glob("*.png")))
        for image in coco["images"]:
            with Image.open(folder / split / image["file_name"]) as pil:
                assert pil.size == (image["width"], image["height"]) == (64, 64)
                assert pil.mode == "RGB"
        annotation_ids = [a["id"] for a in coco["annotations"]]
        assert len(set(annotation_ids)) == len(annotation_ids)
        image_ids = {image["id"] for image in coco["images"]}
        for annotation in coco["annotations"]:
            assert set(annotation) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            assert annotation["image_id"] in image_ids and annotation["category_id"] in (1, 2, 3)
            x, y, w, h = annotation["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64 and w > 0 and h > 0
            assert 0 < annotation["area"] <= w * h and annotation["iscrowd"] == 0


def test_counts_vary_and_some_images_have_no_objects(folder: Path) -> None:
    coco = _load(folder, "train")
    per_image = {image["id"]: 0 for image in coco["images"]}
    for annotation in coco["annotations"]:
        per_image[annotation["image_id"]] += 1
    counts = set(per_image.values())
    assert 0 in counts and len(counts) >= 3 and max(counts) <= SPEC.max_objects
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}


def test_object_sides_are_10_to_50_percent_of_the_image() -> None:
    rng = np.random.default_rng(0)
    sides = [max(obj["bbox"][2:]) for _ in range(40) for obj in generate_image(rng, 128, 4)[1]]
    # Occlusion may shrink a visible extent, never grow it beyond the drawn shape.
    assert max(sides) <= 64 and np.median(sides) >= 20


def test_same_seed_same_files_and_different_seed_differs(tmp_path: Path, folder: Path) -> None:
    again = write_synthetic_dataset(tmp_path / "again", SPEC)
    assert _load(again, "train") == _load(folder, "train")
    for name in ("000001.png", "000007.png"):
        assert (again / "train" / name).read_bytes() == (folder / "train" / name).read_bytes()
    other = write_synthetic_dataset(tmp_path / "other", SyntheticSpec(24, 8, 64, seed=4))
    assert _load(other, "train")["annotations"] != _load(folder, "train")["annotations"]
    assert (other / "train" / "000001.png").read_bytes() != (folder / "train" / "000001.png").read_bytes()


def test_val_images_do_not_depend_on_the_number_of_training_images(tmp_path: Path, folder: Path) -> None:
    bigger = write_synthetic_dataset(tmp_path, SyntheticSpec(num_train=30, num_val=8, image_size=64, seed=3))
    for key in ("images", "annotations"):
        assert _load(bigger, "val")[key] == _load(folder, "val")[key]


def _class_pixels(pixels: np.ndarray, category_id: int) -> np.ndarray:
    """Pixels that are saturated and in the category's hue family (with some margin for noise)."""
    low, high = {1: (0.93, 1.12), 2: (0.21, 0.46), 3: (0.51, 0.72)}[category_id]
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels.reshape(-1, 3) / 255.0]).reshape(pixels.shape)
    hue = np.where(hsv[..., 0] < 0.5, hsv[..., 0] + 1.0, hsv[..., 0]) if category_id == 1 else hsv[..., 0]
    return (hsv[..., 1] > 0.45) & (hsv[..., 2] > 0.45) & (hue >= low) & (hue <= high)


def test_boxes_are_tight_around_the_visible_shape() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(6):
        pixels, objects = generate_image(rng, 64, 4)
        for obj in objects:
            x, y, w, h = obj["bbox"]
            inside = _class_pixels(pixels[y : y + h, x : x + w], obj["category_id"])
            rows, cols = np.nonzero(inside)
            # The shape's colour reaches all four sides of its box: the box is neither too big nor shifted.
            assert (rows.min(), cols.min(), rows.max(), cols.max()) == (0, 0, h - 1, w - 1)
            assert inside.sum() >= 0.9 * obj["area"]
            checked += 1
    assert checked >= 6


def test_classes_have_distinct_colours() -> None:
    rng = np.random.default_rng(11)
    for _ in range(10):
        pixels, objects = generate_image(rng, 64, 4)
        for obj in objects:
            x, y, w, h = obj["bbox"]
            patch = pixels[y : y + h, x : x + w]
            own = _class_pixels(patch, obj["category_id"]).sum()
            others = [_class_pixels(patch, c["id"]).sum() for c in CATEGORIES if c["id"] != obj["category_id"]]
            assert own > max(others)


def test_spec_from_source_parses_options_and_rejects_typos() -> None:
    assert SyntheticSpec.from_source("synthetic") == SyntheticSpec()
    assert SyntheticSpec.from_source("synthetic:num_train=5,seed=2") == SyntheticSpec(num_train=5, seed=2)
    with pytest.raises(ValueError, match="num_trian"):
        SyntheticSpec.from_source("synthetic:num_trian=5")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticSpec(image_size=8)


def test_cache_is_generated_once_under_detr_custom_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path))
    spec = SyntheticSpec(num_train=3, num_val=2, image_size=32, seed=0)
    folder = ensure_synthetic_dataset(spec)
    assert folder == synthetic_cache_dir(spec) and folder.parent == tmp_path
    stamp = (folder / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure_synthetic_dataset(spec) == folder
    assert (folder / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left behind


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path), "--num-train", "4", "--num-val", "2", "--image-size", "48", "--seed", "1"])
    assert "4 train and 2 val" in capsys.readouterr().out
    assert len(_load(tmp_path, "train")["images"]) == 4
    assert _load(tmp_path, "val")["images"][0]["width"] == 48
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--image-size", "4"])


def test_panoptic_and_instance_masks_agree_and_cover_every_pixel(folder: Path) -> None:
    from pycocotools import mask as coco_mask

    from image_processing.segmentation_masks import rgb_to_id
    from modeling_detr_custom.data.synthetic import PANOPTIC_CATEGORIES
    from modeling_detr_custom.evaluation.panoptic_quality import PanopticQualityEvaluator

    panoptic = json.loads((folder / "annotations" / "panoptic_val.json").read_text())
    instances = _load(folder, "val")
    assert {c["id"]: c["isthing"] for c in panoptic["categories"]} == {1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 0}
    evaluator = PanopticQualityEvaluator(PANOPTIC_CATEGORIES)
    for annotation in panoptic["annotations"]:
        png = folder / "annotations" / "panoptic_val" / annotation["file_name"]
        ids = rgb_to_id(np.asarray(Image.open(png).convert("RGB")))
        segments = annotation["segments_info"]
        assert sorted(np.unique(ids).tolist()) == sorted(s["id"] for s in segments)  # every pixel, no void
        assert sum(s["area"] for s in segments) == ids.size
        things = [s for s in segments if s["category_id"] <= 3]
        objects = [o for o in instances["annotations"] if o["image_id"] == annotation["image_id"]]
        assert len(things) == len(objects) and len(segments) == len(things) + 1  # one background segment
        for thing, obj in zip(things, objects):
            mask = coco_mask.decode(obj["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, ids == thing["id"])
            assert obj["bbox"] == thing["bbox"] and obj["area"] == thing["area"] == mask.sum()
        evaluator.update(ids, segments, ids, segments)
    assert evaluator.compute()["PQ"] == 100.0


def test_panoptic_folder_loads_through_the_processor(folder: Path) -> None:
    from modeling_detr_custom import DetrCustomImageProcessor

    panoptic = json.loads((folder / "annotations" / "panoptic_train.json").read_text())
    annotation = next(a for a in panoptic["annotations"] if len(a["segments_info"]) > 1)
    image = Image.open(folder / "train" / annotation["file_name"])
    processor = DetrCustomImageProcessor(format="coco_panoptic", size={"shortest_edge": 64, "longest_edge": 64})
    label = processor(image, annotation, masks_path=folder / "annotations" / "panoptic_train")["labels"][0]
    assert label["masks"].shape == (len(annotation["segments_info"]), 64, 64)
    assert int(label["masks"].sum(0).max()) == 1 and int(label["masks"].sum(0).min()) == 1  # a partition


def test_harder_setting_has_six_classes_many_objects_and_more_occlusion(tmp_path: Path) -> None:
    spec = SyntheticSpec.from_source(
        "synthetic:num_train=4,num_val=2,image_size=256,max_objects=12,num_classes=6,occlusion=1"
    )
    assert spec.folder_name().endswith("-cls6-occ1") and SyntheticSpec().folder_name().endswith("-seed0")
    assert [c["name"] for c in spec.categories][3:] == ["diamond", "cross", "ring"]
    assert [c["id"] for c in _load(write_synthetic_dataset(tmp_path, spec), "val")["categories"]] == list(range(1, 7))
    counts, classes, least_visible = [], set(), 1.0
    for index in range(30):
        _, objects = generate_image(np.random.default_rng((0, 0, index)), 256, 12, num_classes=6, occlusion=1)
        counts.append(len(objects))
        classes.update(obj["category_id"] for obj in objects)
        least_visible = min([least_visible] + [obj["area"] / (obj["bbox"][2] * obj["bbox"][3]) for obj in objects])
    assert classes == set(range(1, 7)) and max(counts) > 8 and max(counts) <= 12
    assert least_visible < 0.3  # a shape may now be mostly hidden (its box is still its visible extent)
    # the default images are unchanged by the new options
    default = generate_image(np.random.default_rng(7), 128, 4)
    explicit = generate_image(np.random.default_rng(7), 128, 4, num_classes=3, occlusion=0)
    assert np.array_equal(default[0], explicit[0]) and default[1] == explicit[1]
    for bad in ("num_classes=4", "occlusion=2"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            SyntheticSpec.from_source(f"synthetic:{bad}")
    harder = write_synthetic_dataset(tmp_path / "panoptic", spec)
    stuff = [c for c in json.loads((harder / "annotations" / "panoptic_val.json").read_text())["categories"]]
    assert [c["id"] for c in stuff if not c["isthing"]] == [7, 8, 9]  # stuff is numbered after the six shapes
