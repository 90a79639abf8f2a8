"""Video input in predict (PyAV), annotated video output, and drawing that reads at any size."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.apps.predict import DrawOptions, ObjectDetector, find_images, predict_files
from modeling_detr_custom.apps.video import VideoWriter, is_video, read_frames
from modeling_detr_custom.apps.visualize import class_colour, draw_detections
from tests.conftest import make_tiny_config

pytest.importorskip("av")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> ObjectDetector:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoint")
    DetrCustomForObjectDetection(make_tiny_config()).save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107}).save_pretrained(folder)
    return ObjectDetector.from_pretrained(str(folder))


def _frames(count: int, height: int = 64, width: int = 96) -> list[Image.Image]:
    generator = np.random.default_rng(0)
    return [Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    with VideoWriter(folder / "clip.mp4", fps=5) as writer:
        for frame in _frames(5):
            writer.write(frame)
    frames = _frames(3, 48, 64)
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "still.gif")
    return folder


def test_videos_are_found_and_gifs_are_videos_only_when_animated(videos: Path) -> None:
    found = find_images([str(videos)])
    assert [path.name for path in found.paths] == ["anim.gif", "clip.mp4", "still.gif"]
    assert [is_video(path) for path in found.paths] == [True, True, False]


def test_video_frames_get_detections_with_frame_and_time_and_a_drawn_video(
    detector: ObjectDetector, videos: Path, tmp_path: Path
) -> None:
    paths = [videos / "clip.mp4", videos / "still.gif", videos / "anim.gif"]
    records = predict_files(detector, paths, threshold=0.0, batch_size=2, draw_dir=tmp_path, every_n_frames=2)
    clip, still, anim = records
    assert [frame["frame"] for frame in clip["frames"]] == [0, 2, 4]
    assert [frame["time_s"] for frame in clip["frames"]] == pytest.approx([0.0, 0.4, 0.8])
    assert (clip["width"], clip["height"], clip["fps"]) == (96, 64, 5.0)
    assert "detections" in still and "frames" not in still
    assert [frame["frame"] for frame in anim["frames"]] == [0, 2]
    # Each frame's detections are those of the decoded frame as an image.
    decoded = [image for _, _, image in read_frames(videos / "clip.mp4", every_n_frames=2)]
    expected = detector.detect(decoded[:2], threshold=0.0) + detector.detect(decoded[2:], threshold=0.0)  # batch 2
    assert [frame["detections"] for frame in clip["frames"]] == expected
    drawn = list(read_frames(tmp_path / "clip.mp4"))
    assert len(drawn) == 3 and drawn[0][2].size == (96, 64)
    assert [time_s for _, time_s, _ in drawn] == pytest.approx([0.0, 0.4, 0.8])  # 5 fps / every 2nd frame
    assert (tmp_path / "still.png").is_file() and (tmp_path / "anim.mp4").is_file()
    json.dumps(records)  # the CLI writes them as JSON


def test_unreadable_video_is_reported_and_skipped(detector: ObjectDetector, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    skipped: list[str] = []
    assert predict_files(detector, [broken], report=skipped.append) == []
    assert len(skipped) == 1 and "broken.mp4" in skipped[0]


def test_cli_video_options(detector: ObjectDetector, videos: Path, tmp_path: Path) -> None:
    from modeling_detr_custom.apps.cli.predict import main

    checkpoint = tmp_path / "checkpoint"
    detector.model.save_pretrained(checkpoint)
    detector.processor.save_pretrained(checkpoint)
    output = tmp_path / "out.json"
    argv = ["--model", str(checkpoint), str(videos / "clip.mp4"), "--output", str(output), "--every_n_frames", "4"]
    assert main(argv + ["--draw", str(tmp_path / "drawn"), "--draw_scale", "2", "--no_labels"]) == 0
    (record,) = json.loads(output.read_text())
    assert [frame["frame"] for frame in record["frames"]] == [0, 4]
    assert next(read_frames(tmp_path / "drawn" / "clip.mp4"))[2].size == (192, 128)


def test_drawing_scales_the_picture_and_the_boxes_and_can_leave_out_tags() -> None:
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    detections = [{"score": 0.9, "label": "rectangle", "label_id": 0, "box": [8, 20, 40, 40]}]
    drawn = draw_detections(image, detections, scale=4)
    assert drawn.size == (256, 192)
    assert drawn.getpixel((32, 120)) == class_colour(0)  # the box's left edge, scaled
    plain = DrawOptions(scale=4, labels=False).draw(image, detections)
    tagged_pixels = np.any(np.asarray(drawn) != np.asarray(plain), axis=-1).sum()
    assert tagged_pixels > 100  # the tag is the only difference
    assert (np.asarray(plain)[84:100, 40:120] == 128).all()  # no tag inside the box's top-left


def test_no_detections_is_written_in_the_picture() -> None:
    image = Image.new("RGB", (320, 240), (255, 255, 255))
    drawn = np.asarray(draw_detections(image, []))
    assert (drawn != 255).any(axis=-1)[:20, :100].sum() > 50  # the note in the top-left corner
    assert not (drawn != 255).any(axis=-1)[40:, :].any()  # nothing else


def test_font_and_line_width_follow_the_image_size() -> None:
    detections = [{"score": 0.5, "label": "rectangle", "label_id": 0, "box": [10, 30, 60, 60]}]

    def tag_height(size: int) -> int:
        image = Image.new("RGB", (size, size), (128, 128, 128))
        scale = size / 128
        boxes = [{**detections[0], "box": [v * scale for v in detections[0]["box"]]}]
        drawn = np.asarray(draw_detections(image, boxes))
        column = drawn[:, int(12 * scale)]
        return int((column != 128).any(axis=-1)[: int(30 * scale)].sum())

    assert tag_height(1024) > 3 * tag_height(128) > 0  # 8 px text at 128 px, 32 px at 1024 px (+ margins)
