"""Hub-style export: Auto class registration, `auto_map`, copied source files and `trust_remote_code` loading."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection, ResNetConfig

from modeling_detr_custom import (
    DetrCustomConfig,
    DetrCustomForObjectDetection,
    DetrCustomForSegmentation,
    DetrCustomModel,
)
from modeling_detr_custom.testing_utils import TINY_SEGMENTATION_CONFIG
from tests.conftest import make_pixel_inputs, make_tiny_config, run_isolated_python

MODELING_FILES = {
    "configuration_detr_custom.py",
    "modeling_detr_custom.py",
    "backbone.py",
    "position_embedding.py",
    "transformer.py",
    "criterion.py",
    "matcher.py",
    "box_ops.py",
    "query_anchors.py",
    "box_refinement.py",
    "denoising.py",
    "weight_init.py",
    "frozen_batch_norm.py",
    "fused_conv_bn.py",
    "tensor_cache.py",
    "validation.py",
    "model_inputs.py",
    "model_outputs.py",
    "loading_rules.py",
    "mlp_head.py",
    "detection_heads.py",
}

# Runs where the package cannot be imported: only the files saved next to the weights are available.
REMOTE_SCRIPT = """
import sys
try:
    import modeling_detr_custom  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("modeling_detr_custom is importable in the remote-code process")
import torch
from transformers import AutoModelForObjectDetection

folder, inputs_path, outputs_path, resave_folder = sys.argv[1:5]
model = AutoModelForObjectDetection.from_pretrained(folder, trust_remote_code=True).eval()
inputs = torch.load(inputs_path)
with torch.no_grad():
    outputs = model(**inputs)
torch.save(
    {"logits": outputs.logits, "pred_boxes": outputs.pred_boxes, "module": type(model).__module__}, outputs_path
)
model.save_pretrained(resave_folder)
"""


# The default architecture, and the options of the `make demo` preset (whose checkpoint users load the same way).
@pytest.fixture(
    scope="module",
    params=[
        {},
        {"query_anchor_boxes": True, "freeze_backbone_batch_norm": False},
        {  # every opt-in convergence option at once
            "query_anchor_boxes": True,
            "box_refinement": "iterative",
            "num_denoising_groups": 2,
            "class_loss_type": "varifocal",
            "num_query_groups": 2,
        },
        {  # use_timm_backbone=False: transformers' own ResNet backbone, built from the saved backbone_config
            "use_timm_backbone": False,
            "backbone": None,
            "backbone_config": ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic"
            ),
        },
    ],
    ids=["default", "demo-options", "convergence-options", "transformers-resnet"],
)
def saved(request, tmp_path_factory) -> tuple[Path, DetrCustomForObjectDetection]:
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(make_tiny_config(**request.param)).eval()
    folder = tmp_path_factory.mktemp("exported")
    model.save_pretrained(folder)
    return folder, model


def test_save_pretrained_writes_auto_map_for_the_three_auto_classes(saved) -> None:
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "detr_custom"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_detr_custom.DetrCustomConfig",
        "AutoModel": "modeling_detr_custom.DetrCustomModel",
        "AutoModelForObjectDetection": "modeling_detr_custom.DetrCustomForObjectDetection",
    }


def test_save_pretrained_copies_self_contained_source_files(saved) -> None:
    folder, _ = saved
    copied = {path.name for path in folder.glob("*.py")}
    assert copied == MODELING_FILES
    for name in copied:
        source = (folder / name).read_text()
        # Sibling modules only through relative imports; never the data subpackage or the package by name.
        assert not re.search(r"^\s*(from|import)\s+(modeling_detr_custom|image_processing)\b", source, re.M), name
        assert not re.search(r"^\s*from\s+\.+data\b", source, re.MULTILINE), name


def test_auto_classes_return_our_classes_when_the_package_is_imported(saved) -> None:
    folder, model = saved
    assert type(AutoConfig.from_pretrained(folder)) is DetrCustomConfig
    detector = AutoModelForObjectDetection.from_pretrained(folder)
    assert type(detector) is DetrCustomForObjectDetection
    assert type(AutoModel.from_pretrained(folder)) is DetrCustomModel
    assert type(AutoModelForObjectDetection.from_config(make_tiny_config())) is DetrCustomForObjectDetection
    inputs = make_pixel_inputs()
    with torch.no_grad():
        torch.testing.assert_close(detector.eval()(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_trust_remote_code_round_trip_in_a_process_without_the_package(saved, tmp_path) -> None:
    folder, model = saved
    inputs = make_pixel_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    result = run_isolated_python(REMOTE_SCRIPT, [folder, "inputs.pt", "outputs.pt", "resaved"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    remote = torch.load(tmp_path / "outputs.pt")
    assert remote["module"].startswith("transformers_modules."), remote["module"]
    with torch.no_grad():
        expected = model(**inputs)
    torch.testing.assert_close(remote["logits"], expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(remote["pred_boxes"], expected.pred_boxes, rtol=0, atol=0)
    # Saving from the remote-code process keeps the folder loadable the same way.
    resaved = tmp_path / "resaved"
    assert MODELING_FILES <= {path.name for path in resaved.glob("*.py")}
    assert set(json.loads((resaved / "config.json").read_text())["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForObjectDetection",
    }


SEGMENTATION_REMOTE_SCRIPT = """
import sys
import torch
from transformers import AutoModelForImageSegmentation

folder, inputs_path, outputs_path = sys.argv[1:4]
model = AutoModelForImageSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    outputs = model(**torch.load(inputs_path))
torch.save({"pred_masks": outputs.pred_masks, "module": type(model).__module__}, outputs_path)
"""


def test_segmentation_model_exports_for_trust_remote_code(tmp_path) -> None:
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG)).eval()
    folder = tmp_path / "exported"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageSegmentation"] == "modeling_segmentation.DetrCustomForSegmentation"
    assert "AutoModelForObjectDetection" not in config["auto_map"]  # its weights are under `detr.`
    copied = {path.name for path in folder.glob("*.py")}
    assert copied == MODELING_FILES | {"modeling_segmentation.py", "mask_head.py", "mask_losses.py"}
    inputs = make_pixel_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    result = run_isolated_python(SEGMENTATION_REMOTE_SCRIPT, [folder, "inputs.pt", "outputs.pt"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "outputs.pt")
    assert remote["module"].startswith("transformers_modules."), remote["module"]
    with torch.no_grad():
        torch.testing.assert_close(remote["pred_masks"], model(**inputs).pred_masks, rtol=0, atol=0)
