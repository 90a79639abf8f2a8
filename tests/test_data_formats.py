"""Folder formats found by layout (`data/formats.py`): Roboflow COCO export, YOLO, Pascal VOC, each read into the one
record type with exact box conversion, clear errors, and `train.py`/`evaluate.py` running on each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_detr_custom.apps.cli.evaluate import main as evaluate_main
from modeling_detr_custom.apps.cli.train import main as train_main
from modeling_detr_custom.data import load_detection_split
from modeling_detr_custom.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from modeling_detr_custom.testing_utils import TINY_FROM_SCRATCH_CONFIG
from tests.format_writers import read_coco, write_roboflow, write_voc, write_yolo

SYNTHETIC = "synthetic:num_train=6,num_val=4,image_size=64,seed=5"
WRITERS = {
    "roboflow": write_roboflow,
    "yolo": write_yolo,
    "yolo-roboflow-layout": lambda coco, out: write_yolo(coco, out, layout="roboflow"),
    "yolo-classes-txt": lambda coco, out: write_yolo(coco, out, names_file="classes.txt"),
    "voc": write_voc,
}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETR_CUSTOM_CACHE", str(cache))
        return ensure_synthetic_dataset(SyntheticSpec.from_source(SYNTHETIC))


@pytest.fixture(scope="module")
def folders(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("formats")
    return {name: writer(synthetic_root, base / name) for name, writer in WRITERS.items()}


def _write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)


def _boxes_by_name(split, records=None) -> list[tuple[str, tuple[float, ...]]]:
    """Every (class name, box) of a loaded split, sorted: what must not depend on the format."""
    names = dict(zip(split.mapping.category_ids, split.mapping.names))
    rows = split.raw.select_columns(["annotations"]).to_list()
    return sorted((names[a["category_id"]], tuple(a["bbox"])) for row in rows for a in row["annotations"])


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("split", ["train", "val"])
def test_every_format_reads_the_same_boxes_and_classes_as_the_coco_folder(
    folders: dict[str, Path], synthetic_root: Path, name: str, split: str
) -> None:
    expected = load_detection_split(str(synthetic_root), split)
    loaded = load_detection_split(str(folders[name]), split)
    # Roboflow's placeholder class is dropped; VOC has no class list, its names come sorted
    names = ["rectangle", "ellipse", "triangle"]
    assert loaded.mapping.names == (sorted(names) if name == "voc" else names)
    assert len(loaded.raw) == len(expected.raw) == len(read_coco(synthetic_root, split)["images"])
    got, want = _boxes_by_name(loaded), _boxes_by_name(expected)
    assert [n for n, _ in got] == [n for n, _ in want]
    np.testing.assert_allclose([b for _, b in got], [b for _, b in want], rtol=0, atol=1e-9)
    assert loaded.coco.getCatIds() == loaded.mapping.category_ids


def test_yolo_box_conversion_is_exact_and_empty_or_missing_label_files_are_images_without_objects(
    tmp_path: Path,
) -> None:
    root = tmp_path / "yolo"
    for stem in ("a", "b", "c"):
        _write_image(root / "images" / "train" / f"{stem}.png", 80, 60)
    (root / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    # a box; a polygon (its extent is the box); values exact in binary so the expected pixels are exact
    (labels / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.125 0.25 0.375 0.25 0.375 0.5 0.125 0.5\n")
    (labels / "b.txt").write_text("")  # c.png has no label file at all
    split = load_detection_split(str(root), "train")
    rows = {Path(r["file_name"]).stem: r for r in split.raw.to_list()}
    assert [a["bbox"] for a in rows["a"]["annotations"]] == [[30.0, 15.0, 20.0, 30.0], [10.0, 15.0, 20.0, 15.0]]
    assert [a["category_id"] for a in rows["a"]["annotations"]] == [1, 0]
    assert rows["b"]["annotations"] == [] and rows["c"]["annotations"] == []
    assert split.mapping.names == ["cat", "dog"]


def test_voc_box_conversion_is_exact_and_difficult_objects_are_ignored_crowd(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    _write_image(root / "JPEGImages" / "img1.jpg", 80, 60)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img1\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("img1  1\n")  # VOC's per-class list: not a split
    (root / "Annotations").mkdir()
    (root / "Annotations" / "img1.xml").write_text(
        "<annotation><filename>img1.jpg</filename><size><width>80</width><height>60</height></size>"
        "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>80</xmax>"
        "<ymax>60</ymax></bndbox></object>"
        "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>30</xmax>"
        "<ymax>40</ymax></bndbox></object></annotation>"
    )
    split = load_detection_split(str(root), "train")
    (row,) = split.raw.to_list()
    assert [a["bbox"] for a in row["annotations"]] == [[0.0, 0.0, 80.0, 60.0], [10.0, 20.0, 20.0, 20.0]]
    assert [a["iscrowd"] for a in row["annotations"]] == [0, 1]
    assert split.mapping.names == ["cat", "dog"]
    with pytest.raises(FileNotFoundError, match=r"Splits there: \['train'\]"):
        load_detection_split(str(root), "val")


def test_bad_yolo_lines_name_the_label_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _write_image(root / "images" / "train" / "a.png", 80, 60)
    (root / "classes.txt").write_text("cat\n")
    (root / "labels" / "train").mkdir(parents=True)
    label = root / "labels" / "train" / "a.txt"
    for line, reason in [
        ("0 0.5 0.5 0.2", "has 4 values"),
        ("3 0.5 0.5 0.2 0.2", "class '3' is not one of the 1 class indices"),
        ("0 1.5 0.5 0.2 0.2", "lies outside the 80x60 image"),
        ("0 0.5 0.5 -0.2 0.2", "not positive"),
        ("cat 0.5 0.5 0.2 0.2", "is not numbers"),
    ]:
        label.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
        with pytest.raises(ValueError, match=f"{label}:2 .*{reason}"):
            load_detection_split(str(root), "train")
    skipped = load_detection_split(str(root), "train", on_error="skip")
    assert len(skipped.raw[0]["annotations"]) == 1 and skipped.data_report.skipped_annotations == 1


def test_a_folder_of_no_known_layout_lists_the_layouts_looked_for(tmp_path: Path) -> None:
    _write_image(tmp_path / "photos" / "a.jpg", 8, 8)
    with pytest.raises(ValueError, match="matches no data set layout") as error:
        load_detection_split(str(tmp_path / "photos"), "train")
    message = str(error.value)
    for layout in ("instances_<split>.json", "_annotations.coco.json", "data.yaml", "ImageSets/Main", "save_to_disk"):
        assert layout in message
    assert "\n" not in message


def test_missing_splits_list_the_ones_there_are(folders: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"Splits there: \['train', 'valid'\]"):
        load_detection_split(str(folders["roboflow"]), "test")
    with pytest.raises(FileNotFoundError, match=r"Splits there: \['train', 'val'\]"):
        load_detection_split(str(folders["yolo"]), "test")


def _assert_per_class_logged_and_minus_one_left_out(log_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    for name in ("rectangle", "ellipse", "triangle"):
        assert {f"eval/per_class/{name}/{metric}" for metric in ("AP", "AP50", "AR100")} <= tags, tags
    assert "eval/AP" in tags and "eval/APl" not in tags  # 64 px images: pycocotools' -1, not logged


@pytest.mark.parametrize("name", ["roboflow", "yolo", "voc"])
def test_train_and_evaluate_scripts_read_each_format(
    folders: dict[str, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture
) -> None:
    model = tmp_path / "tiny.json"
    model.write_text(json.dumps(TINY_FROM_SCRATCH_CONFIG))
    output = tmp_path / "run"
    report_to = "tensorboard" if name == "yolo" else "none"
    argv = ["--data", str(folders[name]), "--model", str(model), "--output_dir", str(output), "--max_steps", "2",
            "--image_size", "64", "--report_to", report_to, "--per_device_train_batch_size", "2"]  # fmt: skip
    assert train_main(argv) == 0
    printed = capsys.readouterr().out
    assert "AR100" in printed and "objects" in printed  # the COCO table, then the per-class table
    assert all(any(line.startswith(f"{c} ") for line in printed.splitlines()) for c in ("rectangle", "triangle"))
    if report_to == "tensorboard":
        _assert_per_class_logged_and_minus_one_left_out(output / "runs")
    config = json.loads((output / "last" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["ellipse", "rectangle", "triangle"]
    metrics = tmp_path / "metrics.json"
    evaluate = ["--model", str(output / "last"), "--data", str(folders[name]), "--output", str(metrics)]
    plots = tmp_path / "plots"
    assert evaluate_main(evaluate + ["--plots", str(plots), "--score_threshold", "0.05"]) == 0
    saved = json.loads(metrics.read_text())
    assert 0.0 <= saved["AP"] <= 1.0 and saved["APl"] is None  # 64 px images: no large objects, null not -1
    assert set(saved["per_class"]) == {"rectangle", "ellipse", "triangle"}
    at_threshold = saved["at_score_threshold"]
    assert at_threshold["score_threshold"] == 0.05 and {"precision", "recall", "f1"} <= set(at_threshold)
    matrix = at_threshold["confusion_matrix"]["matrix"]
    objects = sum(len(r["annotations"]) for r in load_detection_split(str(folders[name]), "val").raw.to_list())
    assert sum(map(sum, matrix[:-1])) == objects  # every object is in exactly one cell of its row
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["confusion_matrix.png", "pr_curve_ellipse.png", "pr_curve_rectangle.png", "pr_curve_triangle.png"]
