"""Hub checkpoints: the model card's metadata and snippet, the saved folder, and `scripts/push_to_hub.py` errors."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.training.hub import HubUploadError, push_folder_to_hub, render_model_card, save_hub_checkpoint
from tests.conftest import make_tiny_config

REPO = Path(__file__).resolve().parents[1]
ID2LABEL = {0: "rectangle", 1: "ellipse", 2: "triangle"}
METRICS = {"AP": 0.5123, "AP50": 0.8, "AP75": 0.55, "APs": 0.3, "APm": 0.6, "APl": -1.0, "AR1": 0.4, "AR10": 0.6,
           "AR100": 0.61}  # fmt: skip
DATASET = "data/my coco: v2 #1"  # YAML-hostile characters must not break the front matter


def _front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def test_model_card_metadata_parses_as_yaml() -> None:
    card = render_model_card(
        repo_id="owner/detr-shapes", dataset=DATASET, id2label=ID2LABEL, metrics=METRICS,
        hyperparameters={"learning_rate": 1e-4, "lr_backbone": 1e-5}, base_model="facebook/detr-resnet-50",
    )  # fmt: skip
    metadata = _front_matter(card)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "object-detection"
    assert {"object-detection", "detr"} <= set(metadata["tags"])
    assert "datasets" not in metadata and metadata["base_model"] == "facebook/detr-resnet-50"  # a local folder
    (result,) = metadata["model-index"][0]["results"]
    assert metadata["model-index"][0]["name"] == "owner/detr-shapes"
    assert result["task"]["type"] == "object-detection" and result["dataset"]["name"] == "my coco: v2 #1"
    values = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert values["AP"] == pytest.approx(0.5123) and values["AR100"] == pytest.approx(0.61)
    assert "APl" not in values  # pycocotools' -1 ("no large objects") is not a score
    assert "| APl | n/a |" in card and "| AP | 0.5123 |" in card and "| lr_backbone | 1e-05 |" in card
    assert "`rectangle`, `ellipse`, `triangle`" in card
    # Without metrics there is no model-index, and the metadata still parses.
    assert "model-index" not in _front_matter(render_model_card(repo_id="a/b", dataset="x", id2label=ID2LABEL))


def test_model_card_links_hub_data_sets_and_never_shows_a_local_path(tmp_path: Path) -> None:
    hub = _front_matter(render_model_card(repo_id="a/b", dataset="Francesco/cppe-5", id2label=ID2LABEL))
    assert hub["datasets"] == ["Francesco/cppe-5"]
    local = tmp_path / "my-coco"
    local.mkdir()
    for dataset in (str(local), "synthetic:num_train=4"):
        card = render_model_card(repo_id="a/b", dataset=dataset, id2label=ID2LABEL, metrics=METRICS)
        assert "datasets" not in _front_matter(card) and str(tmp_path) not in card
    assert "on `my-coco`" in render_model_card(repo_id="a/b", dataset=str(local), id2label=ID2LABEL)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(make_tiny_config(id2label=ID2LABEL)).eval()
    with torch.no_grad():  # a confident "rectangle" everywhere, so the snippet's threshold 0.5 keeps detections
        model.class_labels_classifier.bias[0] = 8.0
    processor = DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    folder = tmp_path_factory.mktemp("hub") / "detr-shapes"
    return save_hub_checkpoint(
        model, processor, folder, dataset="synthetic", metrics=METRICS, repo_id="owner/detr-shapes",
        hyperparameters={"learning_rate": 1e-4},
    )  # fmt: skip


def test_saved_folder_is_a_complete_hub_repository(saved: Path) -> None:
    names = {path.name for path in saved.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "eval_results.json"} <= names
    assert {"modeling_detr_custom.py", "configuration_detr_custom.py", "image_processing_detr_custom.py"} <= names
    config = json.loads((saved / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_detr_custom.DetrCustomForObjectDetection"
    assert config["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    processor_config = json.loads((saved / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoImageProcessor"].endswith("DetrCustomImageProcessor")
    assert json.loads((saved / "eval_results.json").read_text()) == {**METRICS, "APl": None}  # -1 is null in JSON
    assert _front_matter((saved / "README.md").read_text())["model-index"][0]["name"] == "owner/detr-shapes"


def test_card_usage_snippet_runs_as_written(saved: Path, tmp_path: Path) -> None:
    """The snippet, unchanged, in a process without the package: the repository id resolves to a local folder of
    that name (transformers looks for a local directory before the Hub), and `image.jpg` is in the cwd."""
    card = (saved / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    assert 'model="owner/detr-shapes"' in snippet and "trust_remote_code=True" in snippet
    shutil.copytree(saved, tmp_path / "owner" / "detr-shapes")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "image.jpg")
    script = 'import sys\nsys.modules["modeling_detr_custom"] = None\n' + snippet
    environment = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    detections = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(detections) == 8  # every query: "rectangle" with a score near 1
    assert all(d["label"] == "rectangle" and d["score"] > 0.5 and set(d["box"]) == {"xmin", "ymin", "xmax", "ymax"}
               for d in detections)  # fmt: skip


def _push(tmp_path: Path, folder: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}}
    environment.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", **env)
    command = [sys.executable, str(REPO / "scripts" / "push_to_hub.py"), str(folder), "owner/detr-shapes", *extra]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def test_push_without_token_is_a_one_line_error(saved: Path, tmp_path: Path) -> None:
    result = _push(tmp_path, saved)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: No Hugging Face token: set HF_TOKEN or run `hf auth login`."]


def test_push_without_network_is_a_one_line_error(saved: Path, tmp_path: Path) -> None:
    result = _push(tmp_path, saved, "--private", "--revision", "dev", HF_TOKEN="dummy")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Could not reach the Hub to upload owner/detr-shapes")


def test_push_refuses_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(HubUploadError, match="no config.json"):
        push_folder_to_hub(tmp_path, "owner/name", token="dummy")
