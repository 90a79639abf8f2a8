"""The README's Python quickstart runs as written, and the pipeline it shows never prompts or logs errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = _python_blocks((REPO / "README.md").read_text())
    assert blocks, "the README has no python quickstart"
    script = tmp_path / "quickstart.py"
    script.write_text(blocks[0])
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "my-detr" / "model.safetensors").is_file()
    assert "'label': " in result.stdout and "'box': {'xmin'" in result.stdout
    # transformers 5 would ask on stdin whether to trust remote code (a video-processor lookup) and log that
    # the model "is not supported for object-detection"; the package's Auto registration prevents both.
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    assert "is not supported for object-detection" not in result.stderr


def test_deploy_commands_run_as_written(tmp_path: Path) -> None:
    import json

    import torch

    from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomImageProcessor

    section = (REPO / "README.md").read_text().split("## Deploy", 1)[1]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    # my-detr as the quickstart writes it (smaller: the commands, not the model, are under test)
    torch.manual_seed(0)
    config = DetrCustomConfig(
        backbone="resnet18", d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10,
        id2label={0: "rectangle", 1: "ellipse", 2: "triangle"},
    )  # fmt: skip
    DetrCustomForObjectDetection(config).save_pretrained(tmp_path / "my-detr")
    DetrCustomImageProcessor(size={"shortest_edge": 128, "longest_edge": 213}).save_pretrained(tmp_path / "my-detr")
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for command in commands:
        assert command.startswith("python "), command
        result = subprocess.run(
            [sys.executable, *_split(command[len("python ") :])], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, (command, result.stderr[-3000:])
    onnx_records, bf16_records = (json.loads((tmp_path / name).read_text()) for name in ("onnx.json", "bf16.json"))
    assert [record["file"] for record in onnx_records] == ["white.png", "gray.png"]
    assert len(bf16_records) == 2 and "'label': " in result.stdout


def _split(arguments: str) -> list[str]:
    import shlex

    return shlex.split(arguments)


def _bash_commands(markdown: str) -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_every_option_the_readme_gives_a_data_command_exists() -> None:
    from transformers import HfArgumentParser

    from modeling_detr_custom.apps.evaluate import EvaluateArguments
    from modeling_detr_custom.apps.inspect_data import InspectDataArguments
    from modeling_detr_custom.training.arguments import DetrTrainingArguments

    parsers = {
        "scripts/train.py": DetrTrainingArguments,
        "scripts/evaluate.py": EvaluateArguments,
        "scripts/inspect_data.py": InspectDataArguments,
    }
    checked = 0
    for command in _bash_commands((REPO / "README.md").read_text()):
        for script, arguments in parsers.items():
            if script in command:
                known = {option for action in HfArgumentParser(arguments)._actions for option in action.option_strings}
                for option in re.findall(r"(?<=\s)--[a-z_]+", command.split(script, 1)[1]):
                    assert option in known, f"README: {command.strip()!r} gives {option}, unknown to {script}"
                    checked += 1
    assert checked > 20


def test_the_albumentations_example_runs_as_written_on_a_yolo_folder(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("albumentations")
    from modeling_detr_custom.data.synthetic import SyntheticSpec, write_synthetic_dataset
    from tests.format_writers import write_yolo

    coco = write_synthetic_dataset(tmp_path / "coco", SyntheticSpec(num_train=3, num_val=1, image_size=64, seed=0))
    write_yolo(coco, tmp_path / "path" / "to" / "yolo-folder")
    (example,) = [block for block in _python_blocks((REPO / "README.md").read_text()) if "albumentations" in block]
    script = tmp_path / "example.py"
    script.write_text(example + "\nprint(len(train), train.dataset[0]['labels']['boxes'].shape)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("3 torch.Size([")


def test_segmentation_example_runs_as_written(tmp_path: Path) -> None:
    section = (REPO / "README.md").read_text().split("## Segmentation", 1)[1].split("\n## ", 1)[0]
    script = tmp_path / "segmentation.py"
    script.write_text(_python_blocks(section)[0])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "torch.Size([1, 10, 16, 16])" in result.stdout and "'PQ': " in result.stdout
    assert (tmp_path / "shapes" / "annotations" / "panoptic_val.json").is_file()
    assert (tmp_path / "my-detr-panoptic" / "modeling_segmentation.py").is_file()
    assert "is not supported for image-segmentation" not in result.stderr
