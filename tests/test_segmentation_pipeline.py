"""pipeline("image-segmentation") with the segmentation model: transformers' output format (score, label, mask as
a PIL image), with the package and with trust_remote_code where the package is not installed."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from modeling_detr_custom import DetrCustomConfig, DetrCustomForSegmentation, DetrCustomImageProcessor
from modeling_detr_custom.testing_utils import TINY_SEGMENTATION_CONFIG
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
