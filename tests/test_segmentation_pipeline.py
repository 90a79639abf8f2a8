"""pipeline("image-segmentation") with the segmentation model: transformers' output format (score, label, mask as
a PIL image), with the package and with trust_remote_code where the package is not installed."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from modeling_detr_custom import DetrCustomConfig, DetrCustomForSegmentation, DetrCustomImageProcessor
from modeling_detr_custom.testing_utils import TINY_SEGMENTATION_CONFIG, randomize_weights_
from tests.conftest import run_isolated_python


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG, id2label={0: "a", 1: "b", 2: "c"}))
    with torch.no_grad():
        model.detr.class_labels_classifier.bias[0] += 8.0  # confident queries, so that segments are kept
    folder = tmp_path_factory.mktemp("segmentation_checkpoint")
    model.save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def _image() -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))


@pytest.mark.parametrize("subtask", ["panoptic", "instance", "semantic"])
def test_pipeline_returns_transformers_format(folder, subtask) -> None:
    segmenter = pipeline("image-segmentation", model=str(folder))
    results = segmenter(_image(), subtask=subtask, threshold=0.3)
    assert results, "the confident class must give at least one segment"
    for result in results:
        assert set(result) == {"score", "label", "mask"}
        assert result["label"] in {"a", "b", "c"}
        assert isinstance(result["mask"], PIL.Image.Image) and result["mask"].size == (90, 60)
        assert set(np.unique(np.asarray(result["mask"]))) <= {0, 255}
        assert (result["score"] is None) == (subtask == "semantic")


REMOTE = """
import sys
import numpy as np, PIL.Image
from transformers import pipeline
image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
segmenter = pipeline("image-segmentation", model=sys.argv[1], trust_remote_code=True)
results = segmenter(image, subtask="panoptic", threshold=0.3)
print(type(segmenter.model).__module__, [(r["label"], r["mask"].size) for r in results])
"""


def test_pipeline_with_trust_remote_code_without_the_package(folder, tmp_path) -> None:
    result = run_isolated_python(REMOTE, [folder], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("transformers_modules.") and "('a', (90, 60))" in result.stdout


# Measured on the model below: batched vs one by one, mask IoU 0.996 (the image that fills the batch) and 0.991 (the
# padded one: zero padding shifts the backbone features next to it a little); the padded map squashed into the
# image instead (transformers' post-processing, no processed_sizes): IoU 0.872 and a spurious second segment.
MIXED_SIZE_IOU_FLOOR = 0.95


@pytest.fixture(scope="module")
def distinct_folder(tmp_path_factory):
    """Random weights that make every part matter (`randomize_weights_`): segments follow the image, not a blur."""
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG, id2label={0: "a", 1: "b", 2: "c"}))
    randomize_weights_(model, seed=1)
    with torch.no_grad():
        model.detr.class_labels_classifier.bias[0] += 8.0
    folder = tmp_path_factory.mktemp("distinct_segmentation_checkpoint")
    model.save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def _mask_iou(first: PIL.Image.Image, second: PIL.Image.Image) -> float:
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def _batched_and_alone(folder) -> tuple[list, list, list]:
    generator = np.random.default_rng(1)
    sizes = ((60, 90, 3), (90, 45, 3))  # processed to 64x96 and 64x32: the second is padded in a batch
    images = [PIL.Image.fromarray(generator.integers(0, 255, size, dtype=np.uint8)) for size in sizes]
    segmenter = pipeline("image-segmentation", model=str(folder))
    alone = [segmenter(image, subtask="panoptic", threshold=0.3) for image in images]
    return images, alone, segmenter(images, subtask="panoptic", threshold=0.3, batch_size=2)


def _agree(alone: list, batched: list) -> bool:
    same_labels = all([s["label"] for s in a] == [s["label"] for s in b] for a, b in zip(alone, batched))
    ious = [_mask_iou(x["mask"], y["mask"]) for a, b in zip(alone, batched) for x, y in zip(a, b)]
    return same_labels and bool(ious) and min(ious) > MIXED_SIZE_IOU_FLOOR


def test_batched_pipeline_on_mixed_sizes_gives_the_one_by_one_segments(distinct_folder, monkeypatch) -> None:
    """Two sizes in one pipeline batch: the smaller image is padded, and its masks must be cropped to it (the model
    returns the unpadded sizes), not the padded map squashed into it."""
    images, alone, batched = _batched_and_alone(distinct_folder)
    assert all(len(found) for found in alone)
    assert all(s["mask"].size == image.size for found, image in zip(batched, images) for s in found)
    assert _agree(alone, batched)
    import image_processing.segmentation_post_processing as post_processing

    monkeypatch.setattr(post_processing, "_processed_sizes", lambda outputs, sizes: sizes)  # ignore the outputs'
    assert not _agree(alone, _batched_and_alone(distinct_folder)[2])
