"""The layout promises: one processor class under two names, the console command, sibling-only imports in the
folders copied next to checkpoints, no import-time side effects, short files, and old checkpoints still loading."""

import ast
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import image_processing
import modeling_detr_custom
from modeling_detr_custom import DetrCustomForObjectDetection
from tests.conftest import TINY_TRAINING_CONFIG, make_pixel_inputs, run_isolated_python

REPO = Path(__file__).resolve().parents[1]
COPIED_FOLDERS = [REPO / "modeling_detr_custom" / "model", REPO / "image_processing"]
LAST_FLAT_LAYOUT = "0893908"  # the last commit whose model files lived flat in modeling_detr_custom/


def test_image_processing_is_a_top_level_package_with_the_same_processor_class() -> None:
    assert image_processing.DetrCustomImageProcessor is modeling_detr_custom.DetrCustomImageProcessor
    assert Path(image_processing.__file__).parent == REPO / "image_processing"


def test_console_command_lists_and_runs_the_commands() -> None:
    command = Path(sys.executable).with_name("detr-custom")
    assert command.exists(), "the console script is installed with the package (setup.cfg entry_points)"
    listing = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0
    for name in (
        "train",
        "train-trainer",
        "evaluate",
        "predict",
        "export-onnx",
        "push-to-hub",
        "convert-original",
        "demo",
    ):
        assert f"\n  {name} " in listing.stdout
    predict_help = subprocess.run([str(command), "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert predict_help.returncode == 0 and predict_help.stdout.startswith("usage: detr-custom predict")
    unknown = subprocess.run([str(command), "fly"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr


@pytest.mark.parametrize("folder", COPIED_FOLDERS, ids=lambda folder: folder.name)
def test_files_copied_next_to_checkpoints_import_only_their_siblings(folder: Path) -> None:
    siblings = {path.stem for path in folder.glob("*.py")}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in siblings, f"{path.name}: from {'.' * node.level}{node.module}"
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                assert top not in {"modeling_detr_custom", "image_processing"}, f"{path.name} imports {name}"


def test_no_python_file_is_longer_than_600_lines() -> None:
    folders = ["modeling_detr_custom", "image_processing", "scripts", "benchmarks"]
    lengths = {path: len(path.read_text().splitlines()) for folder in folders for path in (REPO / folder).rglob("*.py")}
    assert lengths and not {str(path): n for path, n in lengths.items() if n > 600}


def test_importing_the_package_installs_no_logging_filters() -> None:
    script = (
        "import logging\n"
        "import modeling_detr_custom, image_processing  # noqa: F401\n"
        "loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]\n"
        "print(sum(len(getattr(logger, 'filters', [])) for logger in loggers))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"
    assert logging.getLogger("transformers").filters == []


# Builds a model with the source files of the last flat layout, in a process where the package is not importable,
# and saves it: a checkpoint exactly as users saved them before the move.
OLD_CODE_SCRIPT = """
import sys
import torch
from transformers import AutoConfig, AutoModelForObjectDetection

folder, output, inputs_path, outputs_path = sys.argv[1:5]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
torch.manual_seed(0)
model = AutoModelForObjectDetection.from_config(config, trust_remote_code=True).eval()
model.save_pretrained(output)
with torch.no_grad():
    outputs = model(**torch.load(inputs_path))
torch.save({"logits": outputs.logits, "pred_boxes": outputs.pred_boxes}, outputs_path)
"""

# The files the flat layout copied next to checkpoints (a fixed piece of history: the list does not follow today's).
OLD_MODEL_FILES = [
    "backbone.py",
    "box_ops.py",
    "configuration_detr_custom.py",
    "criterion.py",
    "matcher.py",
    "modeling_detr_custom.py",
    "pipeline_support.py",
    "position_embedding.py",
    "query_anchors.py",
    "transformer.py",
]


def test_a_checkpoint_saved_by_the_flat_layout_loads_with_the_package(tmp_path: Path) -> None:
    if (
        shutil.which("git") is None
        or subprocess.run(
            ["git", "cat-file", "-e", f"{LAST_FLAT_LAYOUT}^{{commit}}"], cwd=REPO, capture_output=True
        ).returncode
    ):
        pytest.skip(f"commit {LAST_FLAT_LAYOUT} is not in this clone (shallow clone)")
    old = tmp_path / "old_code"
    old.mkdir()
    for name in OLD_MODEL_FILES:
        source = subprocess.run(
            ["git", "show", f"{LAST_FLAT_LAYOUT}:modeling_detr_custom/{name}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (old / name).write_text(source)
    config = {
        **TINY_TRAINING_CONFIG,
        "query_anchor_boxes": True,
        "model_type": "detr_custom",
        "auto_map": {
            "AutoConfig": "configuration_detr_custom.DetrCustomConfig",
            "AutoModelForObjectDetection": "modeling_detr_custom.DetrCustomForObjectDetection",
        },
    }
    (old / "config.json").write_text(json.dumps(config))
    inputs = make_pixel_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    result = run_isolated_python(OLD_CODE_SCRIPT, [old, "saved", "inputs.pt", "outputs.pt"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    model = DetrCustomForObjectDetection.from_pretrained(tmp_path / "saved").eval()
    expected = torch.load(tmp_path / "outputs.pt")
    with torch.no_grad():
        outputs = model(**inputs)
    torch.testing.assert_close(outputs.logits, expected["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs.pred_boxes, expected["pred_boxes"], rtol=0, atol=1e-5)


def test_every_command_names_its_options_with_underscores_and_accepts_dash_aliases(capsys) -> None:
    # One convention everywhere: `--top_k` as the transformers scripts write `--per_device_train_batch_size`,
    # and the dash spelling (`--top-k`) as an alias, as `HfArgumentParser` adds it.
    import contextlib
    import importlib
    import re

    from modeling_detr_custom.apps.cli import COMMANDS

    for command, (module, _) in COMMANDS.items():
        with contextlib.suppress(SystemExit):
            importlib.import_module(f"modeling_detr_custom.apps.cli.{module}").main(["--help"])
        option_lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\s+(-\w, )?--", line)]
        options = {name for line in option_lines for name in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", line)}
        for option in options:
            name = option[2:]
            assert f"--{name.replace('-', '_')}" in options, f"{command}: {option} has no underscore spelling"
            assert f"--{name.replace('_', '-')}" in options, f"{command}: {option} has no dash alias"
