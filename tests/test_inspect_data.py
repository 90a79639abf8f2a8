"""`detr-custom inspect-data`: counts per class and split, box sizes, every invalid annotation named, pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modeling_detr_custom.apps.cli import main as cli_main
from modeling_detr_custom.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from tests.format_writers import read_coco, write_yolo


@pytest.fixture
def broken_yolo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A YOLO folder of the synthetic shapes with two bad label lines and one unreadable image in `train`."""
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path / "cache"))
    coco = ensure_synthetic_dataset(SyntheticSpec.from_source("synthetic:num_train=6,num_val=3,image_size=64,seed=2"))
    root = write_yolo(coco, tmp_path / "yolo")
    label = root / "labels" / "train" / "000002.txt"
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.0 0.1\n")
    (root / "images" / "train" / "000004.png").write_bytes(b"not an image")
    return root, coco


def test_inspect_data_counts_lists_every_problem_and_draws(broken_yolo: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    root, coco = broken_yolo
    out = tmp_path / "inspection"
    assert cli_main(["inspect-data", "--data", str(root), "--output_dir", str(out), "--num_samples", "4"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "yolo layout" and summary["classes"] == ["rectangle", "ellipse", "triangle"]
    assert list(summary["splits"]) == ["train", "val"]

    val, expected = summary["splits"]["val"], read_coco(coco, "val")
    assert val["images"] == len(expected["images"]) and val["boxes"] == len(expected["annotations"])
    names = {c["id"]: c["name"] for c in expected["categories"]}
    for category_id, name in names.items():
        boxes = [a for a in expected["annotations"] if a["category_id"] == category_id]
        assert val["per_class"][name] == {"boxes": len(boxes), "images": len({a["image_id"] for a in boxes})}
    assert sum(val["sizes"].values()) == val["boxes"] and val["problems"] == []

    train = summary["splits"]["train"]
    label = root / "labels" / "train" / "000002.txt"
    assert train["images"] == 5  # the unreadable image is skipped
    problems = train["problems"]
    assert len(problems) == 3
    assert f"{label}:" in problems[0] and "class '9'" in problems[0]
    assert f"{label}:" in problems[1] and "not positive" in problems[1]
    assert "000004.png" in problems[2] and "Cannot read image" in problems[2]
    unreadable_objects = len((root / "labels" / "train" / "000004.txt").read_text().split()) // 5
    assert train["skipped_images"] == 1 and train["skipped_annotations"] == 2 + unreadable_objects > 2
    for problem in problems:
        assert problem in printed
    assert "3 problem(s) in train" in printed and "rectangle" in printed

    for name in ("box_sizes.png", "samples_train.png", "samples_val.png"):
        with Image.open(out / name) as picture:
            assert picture.width >= 800 and len(set(picture.convert("L").getdata())) > 50


def test_inspect_data_on_a_folder_of_no_known_layout_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "photos").mkdir()
    assert cli_main(["inspect-data", "--data", str(tmp_path / "photos"), "--output_dir", str(tmp_path / "o")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "matches no data set layout" in error and error.count("\n") == 1
