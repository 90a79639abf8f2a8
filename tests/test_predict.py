"""`scripts/predict.py`, `modeling_detr_custom.predict` and `modeling_detr_custom.visualize`."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.apps.predict import ObjectDetector, find_images, predict_files
from modeling_detr_custom.apps.visualize import class_colour, draw_detections
from tests.conftest import make_tiny_config

REPO = Path(__file__).resolve().parents[1]
ID2LABEL = {0: "rectangle", 1: "ellipse", 2: "triangle"}


def _load_script():
    return importlib.import_module("modeling_detr_custom.apps.cli.predict")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = make_tiny_config(id2label=ID2LABEL, label2id={name: i for i, name in ID2LABEL.items()})
    folder = tmp_path_factory.mktemp("checkpoint")
    DetrCustomForObjectDetection(config).save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a.png 96x64, b.png 64x80, c.jpg stored 96x64 with EXIF "rotate 90" (64x96 upright), a corrupt
    broken.jpg and a notes.txt that is not an image."""
    folder = tmp_path_factory.mktemp("images")
    generator = np.random.default_rng(0)

    def noise(height: int, width: int) -> Image.Image:
        return Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8))

    noise(64, 96).save(folder / "a.png")
    noise(80, 64).save(folder / "b.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    noise(64, 96).save(folder / "c.jpg", exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_skips_the_corrupt_file_writes_json_and_draws(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    output, drawn = tmp_path / "detections.json", tmp_path / "drawn"
    command = [sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(checkpoint), str(images)]
    command += ["--output", str(output), "--draw", str(drawn), "--threshold", "0", "--top_k", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    records = json.loads(output.read_text())
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.png", "c.jpg"]
    assert [(r["width"], r["height"]) for r in records] == [(96, 64), (64, 80), (64, 96)]  # c.jpg: EXIF applied
    for record in records:
        (detection,) = record["detections"]
        assert set(detection) == {"score", "label", "label_id", "box"}
        assert detection["label"] == ID2LABEL[detection["label_id"]] and 0 < detection["score"] <= 1
        x0, y0, x1, y1 = detection["box"]
        assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]

        picture = Image.open(drawn / f"{Path(record['file']).stem}.png").convert("RGB")
        assert picture.size == (record["width"], record["height"])
        # The box outline (its bottom-left corner) is in the class colour; the far corner is untouched.
        corner = (min(int(x0) + 1, record["width"] - 1), min(int(y1), record["height"] - 1))
        assert picture.getpixel(corner) == class_colour(detection["label_id"])
        original = Image.open(record["file"])
        if original.format == "PNG":  # the JPEG is rotated and lossy: compare the lossless ones only
            far = (record["width"] - 1, record["height"] - 1)
            if not (x1 >= far[0] - 3 and y1 >= far[1] - 3):
                assert picture.getpixel(far) == original.convert("RGB").getpixel(far)


def test_globs_top_k_and_stdout(checkpoint: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    script = _load_script()
    assert script.main(["--model", str(checkpoint), str(images / "*.png"), "--threshold", "0", "--top_k", "2"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.png"]
    for record in records:
        scores = [d["score"] for d in record["detections"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)


def test_nothing_readable_is_an_error(checkpoint: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    script = _load_script()
    assert script.main(["--model", str(checkpoint), str(images / "broken.jpg"), str(images / "missing.png")]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err and "no image could be processed" in err
    with pytest.raises(SystemExit):
        script.main(["--model", str(checkpoint), str(images), "--threshold", "1.5"])
    assert "--threshold" in capsys.readouterr().err


def test_batching_and_threshold(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    detector = ObjectDetector.from_pretrained(str(checkpoint))
    paths = find_images([str(images)]).paths
    assert [p.name for p in paths] == ["a.png", "b.png", "broken.jpg", "c.jpg"]  # notes.txt is not an image
    Image.open(paths[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "a_flipped.png")
    paths.insert(1, tmp_path / "a_flipped.png")  # the same size as a.png: the two share a batch
    skipped: list[str] = []
    one_by_one = predict_files(detector, paths, threshold=0.0, batch_size=1, report=skipped.append)
    batched = predict_files(detector, paths, threshold=0.0, batch_size=3, report=skipped.append)
    assert len(skipped) == 2 and all("broken.jpg" in message for message in skipped)
    # Mixed sizes: only equal sizes share a batch, so the batch size changes nothing.
    for single, batch in zip(one_by_one, batched):
        assert [d["label_id"] for d in single["detections"]] == [d["label_id"] for d in batch["detections"]]
        for a, b in zip(single["detections"], batch["detections"]):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert a["box"] == pytest.approx(b["box"], abs=0.05)
    scores = [d["score"] for d in one_by_one[0]["detections"]]
    ranked = sorted(scores)
    cut = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 - 1]) / 2  # between two scores, away from both
    (kept,) = predict_files(detector, paths[:1], threshold=cut)
    assert [d["score"] for d in kept["detections"]] == [s for s in scores if s > cut]


def test_find_images_reports_inputs_that_name_nothing(images: Path, tmp_path: Path) -> None:
    found = find_images([str(images / "a.png"), str(tmp_path / "nope.png"), str(tmp_path), str(images / "*.gif")])
    assert [p.name for p in found.paths] == ["a.png"]
    assert len(found.problems) == 3 and "nope.png" in found.problems[0]


def test_draw_detections_colours_each_class_and_leaves_the_input_alone() -> None:
    colours = [class_colour(i) for i in range(12)]
    assert len(set(colours)) == 12
    first = colours[:8]  # the first classes are far apart (L1 distance in RGB)
    assert min(sum(abs(a - b) for a, b in zip(c1, c2)) for i, c1 in enumerate(first) for c2 in first[:i]) > 100
    image = Image.new("RGB", (120, 90), (128, 128, 128))
    detections = [
        {"score": 0.9, "label": "rectangle", "label_id": 0, "box": [10, 30, 50, 80]},
        {"score": 0.6, "label": "ellipse", "label_id": 1, "box": {"xmin": 60, "ymin": 40, "xmax": 110, "ymax": 85}},
    ]
    drawn = draw_detections(image, detections)
    assert image.getpixel((10, 60)) == (128, 128, 128)  # the input is not modified
    assert drawn.getpixel((10, 60)) == class_colour(0) and drawn.getpixel((110, 70)) == class_colour(1)
    assert drawn.getpixel((30, 60)) == (128, 128, 128)  # inside the box: untouched
    tag = np.asarray(drawn)[20:30, 10:40]
    assert (tag == np.array(class_colour(0))).all(axis=-1).mean() > 0.3  # a filled tag above the box
    with pytest.raises(ValueError, match="box"):
        draw_detections(image, [{"score": 0.5, "label": "x", "box": [1, 2]}])


# --- --task panoptic|instance ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeling_detr_custom import DetrCustomConfig, DetrCustomForSegmentation
    from modeling_detr_custom.testing_utils import TINY_SEGMENTATION_CONFIG, randomize_weights_

    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG, id2label=ID2LABEL))
    randomize_weights_(model, seed=1)  # masks that differ from query to query, so that segments survive
    with torch.no_grad():
        model.detr.class_labels_classifier.bias[1] += 8.0  # confident "ellipse" queries, so that segments are kept
    folder = tmp_path_factory.mktemp("segmentation_checkpoint")
    model.save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("task", ["panoptic", "instance", None])
def test_predict_segments_writes_rle_masks_and_draws_them(segmentation_checkpoint, images, tmp_path, task) -> None:
    from pycocotools import mask as mask_utils

    from modeling_detr_custom.apps.predict import PredictArguments, run_predict

    output, drawn = tmp_path / "segments.json", tmp_path / "drawn"
    arguments = PredictArguments(
        model=str(segmentation_checkpoint), inputs=[str(images / "a.png"), str(images / "b.png")],
        output=str(output), draw=str(drawn), threshold=0.3, task=task,
    )  # fmt: skip
    assert run_predict(arguments, report=lambda message: None) == 0
    records = json.loads(output.read_text())
    assert [(r["width"], r["height"]) for r in records] == [(96, 64), (64, 80)]
    for record in records:
        assert record["segments"], "the confident class must give segments"
        union = np.zeros((record["height"], record["width"]), dtype=np.int64)
        for segment in record["segments"]:
            assert segment["label"] == "ellipse" and segment["score"] > 0.3
            mask = mask_utils.decode({**segment["rle"], "counts": segment["rle"]["counts"].encode()})
            assert mask.shape == (record["height"], record["width"]) and mask.sum() == segment["area"] > 0
            union += mask
        if task != "instance":  # panoptic segments never overlap
            assert union.max() == 1
    picture = np.asarray(Image.open(drawn / "a.png").convert("RGB"), dtype=np.int64)
    original = np.asarray(Image.open(images / "a.png").convert("RGB"), dtype=np.int64)
    assert picture.shape == original.shape and np.abs(picture - original).mean() > 5  # colour over the segments


def test_predict_task_errors_are_one_line(checkpoint, images, segmentation_checkpoint, capsys) -> None:
    module = _load_script()
    assert module.main(["--model", str(checkpoint), str(images / "a.png"), "--task", "panoptic"]) == 1
    assert "needs a segmentation checkpoint" in capsys.readouterr().err.strip()
    with pytest.raises(SystemExit):
        module.main(["--model", str(checkpoint), str(images / "a.png"), "--task", "semantic"])
    assert "--task must be one of detection, panoptic, instance" in capsys.readouterr().err
    # A segmentation checkpoint still gives boxes with --task detection.
    assert module.main(["--model", str(segmentation_checkpoint), str(images / "a.png"), "--task", "detection"]) == 0
    assert '"detections"' in capsys.readouterr().out
