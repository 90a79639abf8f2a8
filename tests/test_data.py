"""The data layer: COCO and `datasets` sources, category mapping, EXIF, bad-data errors and skips, collate."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from modeling_detr_custom.data import (
    CategoryMapping,
    DetectionCollator,
    default_processor,
    load_detection_split,
    write_synthetic_dataset,
)
from modeling_detr_custom.data.synthetic import SyntheticSpec
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator
from modeling_detr_custom.model.configuration_detr_custom import DetrCustomConfig

SPARSE_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 7, "name": "train"}, {"id": 90, "name": "toothbrush"}]


def _write_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_coco(root: Path, split: str, images: list[dict], annotations: list[dict], categories=None) -> Path:
    """A COCO folder; every image in `images` that has a `size` gets a file written."""
    for image in images:
        if "size" in image:
            _write_image(root / split / image["file_name"], *image.pop("size"), seed=image["id"])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    coco = {"images": images, "annotations": annotations, "categories": categories or SPARSE_CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def _image(image_id: int, width: int = 80, height: int = 60, write: bool = True) -> dict:
    image = {"id": image_id, "file_name": f"{image_id:04d}.png", "width": width, "height": height}
    return {**image, "size": (width, height)} if write else image


def _box(annotation_id: int, image_id: int, category_id: int, bbox: list[float]) -> dict:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": 1.0,
        "iscrowd": 0,
    }


@pytest.fixture
def sparse_coco(tmp_path: Path) -> Path:
    """3 images (the third without objects), categories 1, 7, 90."""
    annotations = [
        _box(11, 1, 90, [10, 10, 30, 20]),
        _box(12, 1, 1, [0, 0, 80, 60]),
        _box(13, 2, 7, [40.5, 5, 40, 50]),  # overflows the right edge by 0.5 px: clipped, not an error
    ]
    return _write_coco(tmp_path / "coco", "val", [_image(1), _image(2), _image(3)], annotations)


PROCESSOR = default_processor(64)


# ---------------------------------------------------------------------------------------------------------------
# Category mapping
# ---------------------------------------------------------------------------------------------------------------


def test_mapping_sparse_ids_become_contiguous_labels_and_back() -> None:
    mapping = CategoryMapping.from_coco_categories(list(reversed(SPARSE_CATEGORIES)))
    assert [mapping.to_label(i) for i in (1, 7, 90)] == [0, 1, 2]
    assert [mapping.to_category_id(label) for label in range(3)] == [1, 7, 90]
    assert mapping.id2label == {0: "person", 1: "train", 2: "toothbrush"}
    assert mapping.label2id == {"person": 0, "train": 1, "toothbrush": 2}
    assert mapping.num_labels == 3
    with pytest.raises(ValueError, match=r"Annotation 5 of image a\.png has category_id 3"):
        mapping.to_label(3, annotation_id=5, image="a.png")
    with pytest.raises(ValueError, match="outside 0..2"):
        mapping.to_category_id(3)
    with pytest.raises(ValueError, match="unique"):
        CategoryMapping([1, 1])


def test_mapping_written_into_config_survives_save_and_load(tmp_path: Path) -> None:
    mapping = CategoryMapping.from_coco_categories(SPARSE_CATEGORIES)
    config = mapping.apply_to_config(DetrCustomConfig())
    assert config.num_labels == 3 and config.id2label == mapping.id2label
    config.save_pretrained(tmp_path)
    assert CategoryMapping.from_config(DetrCustomConfig.from_pretrained(tmp_path)) == mapping


def test_mapping_duplicate_names_stay_distinct() -> None:
    mapping = CategoryMapping([3, 4], ["cat", "cat"])
    assert mapping.label2id == {"cat (3)": 0, "cat (4)": 1}


# ---------------------------------------------------------------------------------------------------------------
# COCO folders
# ---------------------------------------------------------------------------------------------------------------


def test_coco_folder_sparse_ids_round_trip_to_a_detections_file(sparse_coco: Path, tmp_path: Path) -> None:
    split = load_detection_split(str(sparse_coco), "val", processor=PROCESSOR)
    assert len(split) == 3 and split.mapping.category_ids == [1, 7, 90]
    first = split.dataset[0]
    assert first["labels"]["class_labels"].tolist() == [2, 0]
    assert first["pixel_values"].shape == (3, 64, 85)  # 60x80 resized to shortest edge 64
    assert split.dataset[2]["labels"]["class_labels"].shape == (0,)  # images without objects are kept
    assert split.raw[1]["annotations"][0]["bbox"] == [40.5, 5.0, 39.5, 50.0]  # clipped to the image
    # Perfect predictions given as contiguous labels come back with the data set's ids.
    evaluator = CocoEvaluator(split.coco, split.mapping)
    for item in split.dataset:
        labels = item["labels"]
        height, width = labels["orig_size"].tolist()
        cx, cy, w, h = (labels["boxes"] * torch.tensor([width, height, width, height])).unbind(-1)
        boxes_xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        scores = torch.ones(len(boxes_xyxy))
        evaluator.update(
            [{"image_id": labels["image_id"], "scores": scores, "labels": labels["class_labels"], "boxes": boxes_xyxy}]
        )
    detections_file = tmp_path / "detections.json"
    detections_file.write_text(json.dumps(evaluator.detections()))
    written = json.loads(detections_file.read_text())
    assert sorted((d["image_id"], d["category_id"]) for d in written) == [(1, 1), (1, 90), (2, 7)]
    assert split.coco.loadRes(str(detections_file)).getCatIds() == [1, 7, 90]
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_coco_folder_missing_split_lists_the_available_ones(sparse_coco: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train.*\['val'\]"):
        load_detection_split(str(sparse_coco), "train", processor=PROCESSOR)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A 60x40 bitmap tagged "rotate 90 degrees" (orientation 6) is a 40x60 image."""
    root = tmp_path / "exif"
    (root / "val").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40), (200, 30, 30)).save(root / "val" / "0001.jpg", exif=exif.tobytes())
    image = {"id": 1, "file_name": "0001.jpg", "width": 40, "height": 60}
    _write_coco(root, "val", [image], [_box(1, 1, 1, [5, 30, 30, 30])])  # fits only the rotated image
    split = load_detection_split(str(root), "val", processor=PROCESSOR, verify_images=True)
    item = split.dataset[0]
    assert item["labels"]["orig_size"].tolist() == [60, 40]
    assert item["pixel_values"].shape[1] > item["pixel_values"].shape[2]  # portrait
    # Sizes declared for the un-rotated bitmap are a clear error, not silently wrong boxes.
    _write_coco(root, "val", [{**image, "width": 60, "height": 40}], [])
    with pytest.raises(ValueError, match=r"0001\.jpg.*EXIF orientation"):
        load_detection_split(str(root), "val", processor=PROCESSOR)


# ---------------------------------------------------------------------------------------------------------------
# Bad data: errors name the file and the annotation; skip mode counts
# ---------------------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda anns, root: anns.append(_box(99, 42, 1, [1, 1, 5, 5])), r"Annotation 99 .*image_id 42"),
        (
            lambda anns, root: anns.append(_box(98, 1, 1, [70, 10, 20, 5])),
            r"Annotation 98 of image .*0001\.png.*outside",
        ),
        (
            lambda anns, root: anns.append(_box(97, 1, 1, [5, 5, -3, 5])),
            r"Annotation 97 of image .*0001\.png.*negative",
        ),
        (
            lambda anns, root: anns.append(_box(96, 1, 5, [5, 5, 3, 5])),
            r"Annotation 96 of image .*0001\.png.*category_id 5",
        ),
        (lambda anns, root: (root / "val" / "0002.png").unlink(), r"0002\.png.*annotations \[13\]"),
        (lambda anns, root: (root / "val" / "0002.png").write_text("not an image"), r"0002\.png.*annotations \[13\]"),
    ],
    ids=["missing-image-id", "box-outside", "negative-size", "unknown-category", "missing-file", "not-an-image"],
)
def test_bad_data_raises_naming_file_and_annotation(sparse_coco: Path, break_it: Any, message: str) -> None:
    path = sparse_coco / "annotations" / "instances_val.json"
    coco = json.loads(path.read_text())
    break_it(coco["annotations"], sparse_coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=message):
        load_detection_split(str(sparse_coco), "val", processor=PROCESSOR)


def test_truncated_image_raises_when_read_or_up_front_when_verifying(sparse_coco: Path) -> None:
    _truncate(sparse_coco / "val" / "0002.png")
    with pytest.raises(ValueError, match=r"0002\.png.*annotations \[13\]"):
        load_detection_split(str(sparse_coco), "val", processor=PROCESSOR, verify_images=True)
    split = load_detection_split(str(sparse_coco), "val", processor=PROCESSOR)  # header only: found on read
    assert split.dataset[0]["labels"]["class_labels"].numel() == 2
    with pytest.raises(ValueError, match=r"Cannot read image .*0002\.png \(image_id 2\)"):
        split.dataset[1]


def test_skip_mode_skips_counts_and_reports(sparse_coco: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sparse_coco / "annotations" / "instances_val.json"
    coco = json.loads(path.read_text())
    coco["annotations"] += [
        _box(98, 1, 1, [70, 10, 20, 5]),
        _box(99, 42, 1, [1, 1, 5, 5]),
        _box(96, 3, 5, [1, 1, 5, 5]),
    ]
    path.write_text(json.dumps(coco))
    _truncate(sparse_coco / "val" / "0002.png")
    with caplog.at_level(logging.WARNING):
        split = load_detection_split(str(sparse_coco), "val", processor=PROCESSOR, on_error="skip")
    assert len(caplog.records) == 4
    assert split.data_report.skipped_images == 1  # the truncated image (and its annotation 13)
    assert split.data_report.skipped_annotations == 4  # 98 (outside), 99 (no image), 96 (category), 13
    report = split.report()
    assert "skipped 1 image(s) and 4 annotation(s)" in report and "0002.png" in report and "Annotation 98" in report
    assert len(split) == 2 and split.raw["image_id"] == [1, 3]
    assert sorted(split.coco.getImgIds()) == [1, 3] and len(split.coco.getAnnIds()) == 2
    assert [item["labels"]["class_labels"].numel() for item in split.dataset] == [2, 0]


def test_clean_data_reports_nothing(sparse_coco: Path) -> None:
    split = load_detection_split(str(sparse_coco), "val", processor=PROCESSOR, on_error="skip")
    assert split.report() == "" and len(split) == 3
    with pytest.raises(ValueError, match="on_error"):
        load_detection_split(str(sparse_coco), "val", processor=PROCESSOR, on_error="ignore")


# ---------------------------------------------------------------------------------------------------------------
# `datasets` sources
# ---------------------------------------------------------------------------------------------------------------


def _hf_split(num_images: int, seed: int) -> datasets.Dataset:
    rows: dict[str, list] = {"image_id": [], "image": [], "width": [], "height": [], "objects": []}
    for i in range(num_images):
        pixels = np.random.default_rng(seed + i).integers(0, 255, (50, 70, 3), dtype=np.uint8)
        rows["image_id"].append(100 + seed + i)
        rows["image"].append(Image.fromarray(pixels))
        rows["width"].append(70)
        rows["height"].append(50)
        boxes = [[5.0, 5.0, 20.0, 30.0], [30.0, 10.0, 40.0, 40.0]][: i % 3]
        rows["objects"].append(
            {
                "id": [i * 10 + k for k in range(len(boxes))],
                "bbox": boxes,
                "category": [(i + k) % 3 for k in range(len(boxes))],
                "area": [w * h for _, _, w, h in boxes],
            }
        )
    features = datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "image": datasets.Image(),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(
                {
                    "id": datasets.Value("int64"),
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=["coverall", "face_shield", "gloves"]),
                    "area": datasets.Value("float32"),
                }
            ),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def test_saved_datasets_folder_in_the_cppe5_layout(tmp_path: Path) -> None:
    folder = tmp_path / "cppe"
    datasets.DatasetDict({"train": _hf_split(4, 0), "validation": _hf_split(3, 50)}).save_to_disk(str(folder))
    train = load_detection_split(str(folder), "train", processor=PROCESSOR)
    assert train.mapping.id2label == {0: "coverall", 1: "face_shield", 2: "gloves"}
    assert len(train) == 4 and train.raw["image_id"] == [100, 101, 102, 103]
    assert train.dataset[2]["labels"]["class_labels"].tolist() == [2, 0]
    assert train.dataset[0]["labels"]["class_labels"].numel() == 0
    val = load_detection_split(str(folder), "val", processor=PROCESSOR, mapping=train.mapping)  # "validation"
    assert sorted(val.coco.getImgIds()) == [150, 151, 152] and val.coco.getCatIds() == [0, 1, 2]
    assert len(val.coco.getAnnIds()) == 3


def test_datasets_source_bad_box_and_skip(tmp_path: Path) -> None:
    data = _hf_split(3, 0).to_dict()
    data["objects"][1]["bbox"][0] = [60.0, 5.0, 30.0, 10.0]  # outside the 70 px wide image
    folder = tmp_path / "bad"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(data, features=_hf_split(1, 0).features)}).save_to_disk(
        str(folder)
    )
    with pytest.raises(ValueError, match=r"Annotation 10 of image .*row 1.*outside"):
        load_detection_split(str(folder), "train", processor=PROCESSOR)
    split = load_detection_split(str(folder), "train", processor=PROCESSOR, on_error="skip")
    assert split.data_report.skipped_annotations == 1 and len(split) == 3


def test_imagefolder_with_metadata_and_string_categories(tmp_path: Path) -> None:
    folder = tmp_path / "imagefolder"
    metadata = []
    for i, (names, boxes) in enumerate(
        [(["dog", "cat"], [[1, 1, 10, 10], [20, 20, 10, 10]]), (["cat"], [[5, 5, 8, 8]]), ([], [])]
    ):
        _write_image(folder / "train" / f"{i}.png", 40, 40, seed=i)
        metadata.append({"file_name": f"{i}.png", "objects": {"bbox": boxes, "categories": names}})
    (folder / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(m) for m in metadata))
    split = load_detection_split(str(folder), "train", processor=PROCESSOR)
    assert split.mapping.id2label == {0: "cat", 1: "dog"}
    labels_by_image = {
        item["labels"]["image_id"].item(): item["labels"]["class_labels"].tolist() for item in split.dataset
    }
    assert labels_by_image == {0: [1, 0], 1: [0], 2: []}


# ---------------------------------------------------------------------------------------------------------------
# Synthetic source, transform and collate
# ---------------------------------------------------------------------------------------------------------------


def test_synthetic_source_uses_its_own_image_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path))
    split = load_detection_split("synthetic:num_train=4,num_val=3,image_size=48", "val")
    assert len(split) == 3 and split.mapping.names == ["rectangle", "ellipse", "triangle"]
    assert split.processor.size["shortest_edge"] == 48
    assert split.dataset[0]["pixel_values"].shape == (3, 48, 48)
    assert pickle.loads(pickle.dumps(split.dataset))[0]["pixel_values"].shape == (3, 48, 48)  # DataLoader workers


def test_collate_pads_through_the_processor_and_keeps_labels_a_list(sparse_coco: Path) -> None:
    # Image 3 is portrait, so the batch mixes shapes: 64x85 and 85x64 -> padded to 85x85.
    _write_coco(sparse_coco, "val", [_image(1), _image(3, 60, 80)], [_box(11, 1, 90, [10, 10, 30, 20])])
    split = load_detection_split(str(sparse_coco), "val", processor=PROCESSOR)
    items = [split.dataset[0], split.dataset[1]]
    batch = split.collate_fn(items)
    assert isinstance(split.collate_fn, DetectionCollator)
    assert batch["pixel_values"].shape == (2, 3, 85, 85) and batch["pixel_mask"].dtype == torch.int64
    assert batch["pixel_mask"][0, :64, :85].all() and not batch["pixel_mask"][0, 64:].any()
    assert batch["pixel_mask"][1, :85, :64].all() and not batch["pixel_mask"][1, :, 64:].any()
    assert torch.equal(batch["pixel_values"][0, :, :64, :85], items[0]["pixel_values"])
    assert isinstance(batch["labels"], list) and batch["labels"][0] is items[0]["labels"]
    assert batch["labels"][1]["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="empty"):
        split.collate_fn([])


def test_dataloader_batches(tmp_path: Path) -> None:
    folder = write_synthetic_dataset(tmp_path, SyntheticSpec(num_train=2, num_val=5, image_size=40, seed=0))
    split = load_detection_split(str(folder), "val")
    loader = torch.utils.data.DataLoader(split.dataset, batch_size=2, collate_fn=split.collate_fn)
    batches = list(loader)
    assert [len(b["labels"]) for b in batches] == [2, 2, 1]
    assert [int(t["image_id"]) for b in batches for t in b["labels"]] == [1, 2, 3, 4, 5]


def test_training_augmentation_is_scaled_seeded_and_keeps_boxes_normalised(tmp_path: Path) -> None:
    folder = write_synthetic_dataset(tmp_path, SyntheticSpec(num_train=6, num_val=1, image_size=64, seed=0))
    split = load_detection_split(str(folder), "train", train=True)
    sides = set()
    for index in range(len(split)):
        item = split.dataset[index]
        boxes = item["labels"]["boxes"]
        assert boxes.numel() == 0 or (boxes.min() >= 0 and boxes.max() <= 1)
        assert tuple(item["labels"]["size"].tolist()) == tuple(item["pixel_values"].shape[1:])
        sides.add(min(item["pixel_values"].shape[1:]))
    # Scales 480..800 of the original, times 64/800; crops can make one side smaller still.
    assert max(sides) <= 64 and min(sides) < 64
    torch.manual_seed(0)
    first = split.dataset[3]
    torch.manual_seed(0)
    again = split.dataset[3]
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert torch.equal(first["labels"]["boxes"], again["labels"]["boxes"])


def test_custom_augmentation_callable_and_no_augmentation(tmp_path: Path) -> None:
    folder = write_synthetic_dataset(tmp_path, SyntheticSpec(num_train=2, num_val=1, image_size=64, seed=0))

    def flip_all(image: Image.Image, annotations: dict, generator: torch.Generator) -> tuple[Image.Image, dict]:
        assert isinstance(generator, torch.Generator)
        for obj in annotations["annotations"]:
            obj["bbox"] = [image.width - obj["bbox"][0] - obj["bbox"][2], *obj["bbox"][1:]]
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), annotations

    plain = load_detection_split(str(folder), "train", train=True, augment=False)
    flipped = load_detection_split(str(folder), "train", augment=flip_all)
    index = next(i for i in range(2) if plain.dataset[i]["labels"]["boxes"].numel())
    plain_item, flipped_item = plain.dataset[index], flipped.dataset[index]
    assert torch.equal(flipped_item["pixel_values"], plain_item["pixel_values"].flip(-1))
    cx = plain_item["labels"]["boxes"][:, 0]
    torch.testing.assert_close(flipped_item["labels"]["boxes"][:, 0], 1 - cx)
    with pytest.raises(ValueError, match="augment must be one of detr, light, none"):  # names are strings now
        load_detection_split(str(folder), "train", augment="yes")
    with pytest.raises(TypeError, match="augment"):
        load_detection_split(str(folder), "train", augment=42)


def test_duplicate_image_ids_in_a_datasets_source_are_an_error(tmp_path: Path) -> None:
    data = _hf_split(2, 0).to_dict()
    data["image_id"] = [7, 7]
    folder = tmp_path / "dup"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(data, features=_hf_split(1, 0).features)}).save_to_disk(
        str(folder)
    )
    with pytest.raises(ValueError, match=r"image_id 7 is used by more than one image"):
        load_detection_split(str(folder), "train", processor=PROCESSOR)
