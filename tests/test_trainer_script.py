"""`scripts/train_trainer.py`: transformers' Trainer with DETR's recipe, in-process pieces and a 2-process run."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from transformers import EvalPrediction, HfArgumentParser

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection
from modeling_detr_custom.apps.predict import ObjectDetector
from modeling_detr_custom.data import CategoryMapping, SyntheticSpec, default_processor, write_synthetic_dataset
from modeling_detr_custom.data.coco import build_coco_gt
from modeling_detr_custom.testing_utils import TINY_TRAINING_CONFIG
from modeling_detr_custom.training.optim import backbone_parameter_names
from modeling_detr_custom.training.trainer import (
    CocoMetrics,
    DetrDataArguments,
    DetrTrainer,
    DetrTrainerArguments,
)
from tests.conftest import make_tiny_config, scalar_metrics, scripted_scores

REPO = Path(__file__).resolve().parents[1]
# Frozen BatchNorm: a few training steps at a tiny learning rate then barely move the predictions.
TINY_MODEL = TINY_TRAINING_CONFIG
SPEC = SyntheticSpec(num_train=8, num_val=5, image_size=64, seed=3)


def _parse(*argv: str) -> tuple[DetrDataArguments, DetrTrainerArguments]:
    parser = HfArgumentParser((DetrDataArguments, DetrTrainerArguments))
    return parser.parse_args_into_dataclasses(args=["--report_to", "none", *argv])


def test_defaults_are_the_detr_recipe_and_need_no_flags() -> None:
    data_args, args = _parse()
    assert data_args.data == "synthetic" and data_args.model == "detr-tiny"
    assert (args.learning_rate, args.lr_backbone, args.weight_decay, args.max_grad_norm) == (1e-4, 1e-5, 1e-4, 0.1)
    assert args.per_device_train_batch_size == 2 and args.num_train_epochs == 300 and args.lr_drop == 200
    assert args.remove_unused_columns is False and args.label_names == ["labels"] and args.batch_eval_metrics
    # The raw columns feed the image transform: asking to remove them is overridden, not obeyed.
    _, args = _parse("--remove_unused_columns", "True")
    assert args.remove_unused_columns is False
    with pytest.raises(ValueError, match="--lr_backbone"):
        _parse("--lr_backbone", "-1")


def test_optimizer_has_a_backbone_group_and_steplr_drops_at_lr_drop_epochs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(make_tiny_config())
    _, args = _parse(
        "--output_dir", str(tmp_path), "--lr_drop", "2", "--learning_rate", "2e-4", "--eval_strategy", "no"
    )
    trainer = DetrTrainer(model=model, args=args, train_dataset=list(range(8)))  # 4 steps per epoch at batch 2
    optimizer = trainer.create_optimizer()
    groups = {group["name"]: group for group in optimizer.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups["backbone"]["params"]} == backbone_parameter_names(model)
    assert groups["backbone"]["lr"] == 1e-5 and groups["transformer"]["lr"] == 2e-4
    assert all(group["weight_decay"] == 1e-4 for group in optimizer.param_groups)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trained

    scheduler = trainer.create_scheduler(num_training_steps=100, optimizer=optimizer)
    rates = []
    for _ in range(10):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates[7] == [2e-4, 1e-5]  # the last step of epoch 2
    assert rates[8] == pytest.approx([2e-5, 1e-6])  # epoch 3 onwards: x0.1, every group


def _perfect_batch(coco, image_ids: list[int], num_queries: int = 8) -> EvalPrediction:
    """What `prediction_step` gathers for `image_ids`: logits/boxes reproducing the ground truth exactly."""
    mapping = CategoryMapping.from_coco_categories(coco.dataset["categories"])
    logits = torch.full((len(image_ids), num_queries, mapping.num_labels + 1), -10.0)
    logits[..., -1] = 10.0  # unused queries: "no object"
    pred_boxes = torch.full((len(image_ids), num_queries, 4), 0.5)
    sizes = []
    for row, image_id in enumerate(image_ids):
        image = coco.imgs[image_id]
        sizes.append([image["height"], image["width"]])
        for query, annotation in enumerate(coco.imgToAnns[image_id]):
            x, y, w, h = annotation["bbox"]
            logits[row, query, mapping.to_label(annotation["category_id"])] = 10.0
            logits[row, query, -1] = -10.0
            scale = torch.tensor([image["width"], image["height"]] * 2, dtype=torch.float32)
            pred_boxes[row, query] = torch.tensor([x + w / 2, y + h / 2, w, h]) / scale
    label_ids = (torch.tensor(image_ids), torch.tensor(sizes))
    return EvalPrediction(predictions=(logits, pred_boxes), label_ids=label_ids)


class _Split:
    def __init__(self, coco) -> None:
        self.coco = coco
        self.mapping = CategoryMapping.from_coco_categories(coco.dataset["categories"])
        self.processor = default_processor(64)


def test_coco_metrics_score_batches_incrementally_and_count_each_image_once() -> None:
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    records = [
        {"image_id": i, "file_name": f"{i}.png", "width": 64 + 8 * i, "height": 48, "annotations": [
            {"id": 10 * i + k, "bbox": [4.0 + 9 * k, 6.0, 20.0, 16.0 + k], "category_id": (3, 7)[(i + k) % 2],
             "area": 320.0, "iscrowd": 0} for k in range(i % 3)
        ]}
        for i in range(1, 6)
    ]  # fmt: skip
    mapping = CategoryMapping.from_coco_categories(categories)
    coco = build_coco_gt(records, mapping)
    metrics = CocoMetrics(_Split(coco))
    # A 2-process gather with batch 2: the padded last batch repeats image 1.
    assert metrics(_perfect_batch(coco, [1, 2]), compute_result=False) == {}
    assert metrics(_perfect_batch(coco, [3, 4]), compute_result=False) == {}
    result = metrics(_perfect_batch(coco, [5, 1]), compute_result=True)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["num_images"] == 5
    # The next evaluation starts empty: one image only, with nothing predicted.
    missed = _perfect_batch(coco, [2])
    missed.predictions[1][:] = 0.5  # every box in the middle of the image, far from the two objects
    result = metrics(missed)
    assert result["num_images"] == 1 and result["AR100"] == 0.0


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DETR_CUSTOM_CACHE=str(workdir / "cache"), OMP_NUM_THREADS="1")
    env.pop("HF_TOKEN", None)
    return env


def _run(command: list[str], workdir: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random tiny model, and data whose val ground truth is that model's own detections (AP near 1).

    An untrained model scores 0 AP on real data, which would make "the 2-process mAP equals the 1-process mAP"
    hold trivially; against its own detections the mAP is high and any lost or doubled image would show.
    """
    workdir = tmp_path_factory.mktemp("trainer")
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(DetrCustomConfig(**TINY_MODEL)).eval()
    model.save_pretrained(workdir / "random")
    data = write_synthetic_dataset(workdir / "probe", SPEC)
    annotations_file = data / "annotations" / "instances_val.json"
    coco = json.loads(annotations_file.read_text())
    mapping = CategoryMapping.from_coco_categories(coco["categories"])
    detector = ObjectDetector(model, default_processor(SPEC.image_size))
    images = [Image.open(data / "val" / image["file_name"]).convert("RGB") for image in coco["images"]]
    coco["annotations"] = []
    for image, detections in zip(coco["images"], detector.detect(images, threshold=0.0)):
        for detection in detections:
            x0, y0, x1, y1 = detection["box"]
            if x1 - x0 > 1 and y1 - y0 > 1:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image["id"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "category_id": mapping.to_category_id(detection["label_id"]), "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                })  # fmt: skip
    annotations_file.write_text(json.dumps(coco))
    return workdir, data


def test_two_process_trainer_run_trains_evaluates_and_saves_a_hub_folder(probe: tuple[Path, Path]) -> None:
    workdir, data = probe
    output_dir = workdir / "out"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "scripts" / "train_trainer.py"),
    ]  # free port
    command += ["--data", str(data), "--model", str(workdir / "random"), "--output_dir", str(output_dir)]
    command += ["--max_steps", "2", "--learning_rate", "1e-6", "--lr_backbone", "1e-6", "--eval_strategy", "steps"]
    command += ["--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none"]
    command += ["--logging_steps", "1"]
    result = _run(command, workdir)
    assert "AR100" in result.stdout and "Saved the model" in result.stdout

    # Two processes really ran: 8 images at 2 per device and 2 devices make 2 steps one epoch.
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(1.0)
    evaluation = next(entry for entry in state["log_history"] if "eval_AP" in entry)
    training_log = next(entry for entry in state["log_history"] if "loss" in entry)
    for term in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error", "loss_ce_aux"):
        assert term in training_log, training_log  # every loss term, not just the total
    assert evaluation["eval_num_images"] == SPEC.num_val  # the padded last batch counted once, none lost

    # best/ and last/ as train.py lays them out; the only evaluation (step 2) is both the best and the last model.
    assert sorted(p.name for p in output_dir.iterdir()) == ["best", "checkpoint-2", "last", "training_args.json"]
    assert _weights(output_dir / "best") == _weights(output_dir / "last")
    output_dir = output_dir / "last"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "eval_results.json"):
        assert (output_dir / name).is_file(), name
    assert {"modeling_detr_custom.py", "image_processing_detr_custom.py"} <= {p.name for p in output_dir.glob("*.py")}
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"].endswith("DetrCustomForObjectDetection")
    assert config["id2label"] == {"0": "rectangle", "1": "ellipse", "2": "triangle"} and config["auxiliary_loss"]
    card = (output_dir / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "object-detection" and metadata["library_name"] == "transformers"
    assert "lr_backbone" in card and "| AP |" in card

    trained, initial = load_file(output_dir / "model.safetensors"), load_file(workdir / "random" / "model.safetensors")
    assert any(not torch.equal(trained[name], initial[name]) for name in initial), "training changed nothing"

    # The 2-process evaluation inside the Trainer equals a 1-process evaluation of the saved folder.
    metrics_file = workdir / "evaluate.json"
    evaluate = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--model", str(output_dir), "--data", str(data)]
    _run(evaluate + ["--output", str(metrics_file), "--per_device_eval_batch_size", "3"], workdir)
    single = json.loads(metrics_file.read_text())
    saved = json.loads((output_dir / "eval_results.json").read_text())
    assert scalar_metrics(saved) == pytest.approx(scalar_metrics(single), abs=1e-9)
    assert set(saved["per_class"]) == {"rectangle", "ellipse", "triangle"}
    assert evaluation["eval_AP"] == pytest.approx(single["AP"], abs=1e-9)
    assert single["AP50"] > 0.8, single  # near-perfect: the ground truth is the model's own output


def test_bad_arguments_give_one_line_errors(tmp_path: Path) -> None:
    script = [sys.executable, str(REPO / "scripts" / "train_trainer.py"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(
        script + ["--model", "no-such-preset", "--data", "synthetic:num_train=2,num_val=1,image_size=32"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "no-such-preset" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        script + ["--push_to_hub", "--max_steps", "1", "--data", "synthetic:num_train=2,num_val=1,image_size=32"],
        cwd=tmp_path, env={**_env(tmp_path), "HF_HOME": str(tmp_path / "hf")}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "No Hugging Face token" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()  # failed before training, not after


def test_help_lists_the_detr_options(capsys: pytest.CaptureFixture) -> None:
    script = importlib.import_module("modeling_detr_custom.apps.cli.train_trainer")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--model", "--lr_backbone", "--lr_drop", "--max_grad_norm", "--push_to_hub"):
        assert option in text


def test_metrics_numpy_inputs_match_tensor_inputs() -> None:
    """Without `batch_eval_metrics` the Trainer hands over concatenated numpy arrays; the metrics are the same."""
    categories = [{"id": 1, "name": "a"}]
    records = [
        {"image_id": i, "file_name": f"{i}.png", "width": 40, "height": 30, "annotations": [
            {"id": i, "bbox": [2.0 * i, 3.0, 10.0, 12.0], "category_id": 1, "area": 120.0, "iscrowd": 0}
        ]}
        for i in (1, 2, 3)
    ]  # fmt: skip
    coco = build_coco_gt(records, CategoryMapping.from_coco_categories(categories))
    batch = _perfect_batch(coco, [1, 2, 3])
    batch.predictions[1][0, 0] += 0.05  # one imperfect box: AP below 1
    as_numpy = EvalPrediction(
        predictions=tuple(np.asarray(x) for x in batch.predictions),
        label_ids=tuple(np.asarray(x) for x in batch.label_ids),
    )
    expected = CocoMetrics(_Split(coco))(batch)
    assert 0.0 < expected["AP"] < 1.0
    assert CocoMetrics(_Split(coco))(as_numpy) == expected


# --- the output folder: another run refused, writability checked first, best/ and last/ written whole ---------------

RUN_DATA = "synthetic:num_train=4,num_val=2,image_size=64,seed=3"


def _train_in_process(output_dir: Path, *extra: str) -> int:
    from modeling_detr_custom.apps.cli.train_trainer import main

    argv = ["--data", RUN_DATA, "--model", str(output_dir.parent / "tiny.json"), "--output_dir", str(output_dir)]
    argv += ["--report_to", "none", "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps"]
    return main(argv + ["--save_steps", "1", *extra])


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step Trainer run, evaluated and checkpointed at every step."""
    workdir = tmp_path_factory.mktemp("trainer-run")
    (workdir / "tiny.json").write_text(json.dumps(TINY_MODEL))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETR_CUSTOM_CACHE", str(workdir / "cache"))
        assert _train_in_process(workdir / "out", "--max_steps", "2") == 0
    return workdir / "out"


@pytest.fixture
def run_copy(trainer_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(trainer_run.parent / "cache"))
    shutil.copy(trainer_run.parent / "tiny.json", tmp_path / "tiny.json")
    shutil.copytree(trainer_run, tmp_path / "out")
    return tmp_path / "out"


def _weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


def test_best_and_last_are_laid_out_as_train_py_writes_them(trainer_run: Path) -> None:
    assert sorted(p.name for p in trainer_run.iterdir()) == [
        "best",
        "checkpoint-1",
        "checkpoint-2",
        "last",
        "training_args.json",
    ]
    state = json.loads((trainer_run / "checkpoint-2" / "trainer_state.json").read_text())
    assert _weights(trainer_run / "best") == _weights(trainer_run / f"checkpoint-{state['best_global_step']}")
    assert _weights(trainer_run / "last") == _weights(trainer_run / "checkpoint-2")
    for folder in ("best", "last"):
        assert set(json.loads((trainer_run / folder / "eval_results.json").read_text())) >= {"AP", "AP50", "AR100"}
        assert (trainer_run / folder / "README.md").is_file() and (trainer_run / folder / "config.json").is_file()


def test_output_dir_holding_another_run_is_refused_unless_overwritten(run_copy: Path, capsys) -> None:
    best, last = _weights(run_copy / "best"), _weights(run_copy / "last")
    assert _train_in_process(run_copy, "--max_steps", "1") == 1
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "Traceback" not in err
    assert _weights(run_copy / "best") == best and _weights(run_copy / "last") == last
    assert _train_in_process(run_copy, "--max_steps", "1", "--overwrite_output_dir", "--eval_strategy", "no") == 0


def test_unwritable_output_dir_is_refused_before_the_data_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    monkeypatch.setattr("modeling_detr_custom.training.trainer.load_detection_split", None)  # never reached
    assert _train_in_process(blocker / "out", "--max_steps", "1") == 1
    err = capsys.readouterr().err
    assert f"Cannot write to --output_dir {blocker / 'out'}" in err and "Traceback" not in err


def _full_disk(self: DetrTrainer, output_dir: str, state_dict: Any = None) -> None:
    (Path(output_dir) / "config.json").write_text("{")  # half written
    raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 123 vs 456")


def test_disk_full_while_writing_last_names_it_and_keeps_the_previous_last(run_copy: Path, monkeypatch, capsys):
    last = _weights(run_copy / "last")
    monkeypatch.setattr(DetrTrainer, "_save", _full_disk)
    extra = ("--resume_from_checkpoint", "latest", "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no")
    assert _train_in_process(run_copy, *extra) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"Could not write {run_copy / 'last'}" in errors[0] and "Traceback" not in err
    assert _weights(run_copy / "last") == last and json.loads((run_copy / "last" / "config.json").read_text())


def test_disk_full_while_writing_a_checkpoint_names_it_in_one_line(run_copy: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(DetrTrainer, "_save", _full_disk)
    assert _train_in_process(run_copy, "--resume_from_checkpoint", "latest", "--max_steps", "3") == 1
    err = capsys.readouterr().err
    assert f"Could not write {run_copy / 'checkpoint-3'} (disk full or no permission?)" in err
    assert "Traceback" not in err and (run_copy / "checkpoint-2" / "model.safetensors").is_file()


def test_too_little_free_space_is_reported_at_start(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        "modeling_detr_custom.training.run_state.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0)
    )
    assert _train_in_process(tmp_path / "out", "--max_steps", "1", "--eval_strategy", "no") == 0
    assert f"warning: {tmp_path / 'out'} has 0 MiB free" in capsys.readouterr().out


def _resumed_from(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("Resuming from ")).split()[-1].rstrip(".")


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda folder: (folder / "training_progress.json").unlink(), "no training_progress.json"),
        (lambda folder: _truncate(folder / "optimizer.pt"), "optimizer.pt has"),
        (lambda folder: _truncate(folder / "model.safetensors"), "model.safetensors has"),
    ],
    ids=["killed-before-the-marker", "truncated-optimizer", "truncated-weights"],
)
def test_a_damaged_newest_trainer_checkpoint_is_reported_and_the_previous_one_resumed(run_copy, damage, reason, capsys):
    damage(run_copy / "checkpoint-2")
    extra = ("--resume_from_checkpoint", "latest", "--max_steps", "3", "--eval_strategy", "no")
    assert _train_in_process(run_copy, *extra) == 0
    out = capsys.readouterr().out
    assert f"warning: {run_copy / 'checkpoint-2'} cannot be resumed from: {reason}" in out
    assert _resumed_from(out) == str(run_copy / "checkpoint-1")
    state = json.loads((run_copy / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (run_copy / "checkpoint-3" / "training_progress.json").is_file()


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def test_a_damaged_trainer_checkpoint_named_explicitly_gives_a_one_line_error(run_copy: Path, capsys) -> None:
    _truncate(run_copy / "checkpoint-2" / "optimizer.pt")
    extra = ("--resume_from_checkpoint", str(run_copy / "checkpoint-2"), "--max_steps", "3")
    assert _train_in_process(run_copy, *extra) == 1
    err = capsys.readouterr().err
    assert f"error: {run_copy / 'checkpoint-2'} cannot be resumed from: optimizer.pt has" in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_overwrite_output_dir_never_rotates_or_resumes_the_replaced_runs_checkpoints(run_copy: Path, capsys) -> None:
    old_checkpoint = _weights(run_copy / "checkpoint-2")
    common = ("--overwrite_output_dir", "--eval_strategy", "no", "--save_total_limit", "1")
    assert _train_in_process(run_copy, "--max_steps", "1", *common) == 0
    # The new run's checkpoint-1 is its own; the replaced run's checkpoint-2 is neither rotated away nor resumed.
    assert _weights(run_copy / "checkpoint-2") == old_checkpoint
    capsys.readouterr()
    assert _train_in_process(run_copy, "--resume_from_checkpoint", "latest", "--max_steps", "2", *common) == 0
    assert _resumed_from(capsys.readouterr().out) == str(run_copy / "checkpoint-1")
    assert _weights(run_copy / "checkpoint-2") != old_checkpoint  # rewritten by this run at its step 2 ...
    assert not (run_copy / "checkpoint-1").exists()  # ... and its own older checkpoint rotated (limit 1)


def _full_disk_in(method: str):
    def fail(self: DetrTrainer, output_dir: str) -> None:
        (Path(output_dir) / "partial.bin").write_bytes(b"0")
        raise RuntimeError(f"[enforce fail at inline_container.cc:626] . unexpected pos 1 vs 2 ({method})")

    return fail


@pytest.mark.parametrize("method", ["_save_optimizer_and_scheduler", "_save_rng_state"])
def test_disk_full_while_writing_optimizer_or_rng_state_names_the_checkpoint(run_copy, method, monkeypatch, capsys):
    monkeypatch.setattr(DetrTrainer, method, _full_disk_in(method))
    assert _train_in_process(run_copy, "--resume_from_checkpoint", "latest", "--max_steps", "3") == 1
    err = capsys.readouterr().err
    assert f"error: Could not write {run_copy / 'checkpoint-3'} (disk full or no permission?)" in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not (run_copy / "checkpoint-3" / "training_progress.json").exists()  # never resumed from
    for step in (1, 2):  # nothing already saved is lost
        assert (run_copy / f"checkpoint-{step}" / "training_progress.json").is_file()


# --- EMA and early stopping through callbacks, as train.py -----------------------------------------------------------


def _script_coco_scores(monkeypatch: pytest.MonkeyPatch, model_scores: list[dict], ema_scores: list[dict] = ()):
    next_scores = scripted_scores(monkeypatch, model_scores, ema_scores)
    monkeypatch.setattr(CocoMetrics, "_compute", lambda self: {**next_scores(), "num_images": 2})


def test_trainer_best_and_last_hold_the_ema_when_it_scores_higher(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path / "cache"))
    _script_coco_scores(monkeypatch, [{"AP": 0.3}, {"AP": 0.2}], ema_scores=[{"AP": 0.1}, {"AP": 0.5}])
    assert _train_in_process(tmp_path / "out", "--max_steps", "2", "--ema_decay", "0.5") == 0
    run = tmp_path / "out"
    assert sorted(p.name for p in run.iterdir()) == [
        "best",
        "checkpoint-1",
        "checkpoint-2",
        "last",
        "training_args.json",
    ]
    ema = torch.load(run / "checkpoint-2" / "ema_state.pt", weights_only=True)
    assert ema["num_updates"] == 2
    name = "class_labels_classifier.weight"
    weights = load_file(run / "checkpoint-2" / "model.safetensors")[name]
    for folder in ("best", "last"):  # step 2: the EMA (0.5) beats the weights (0.2) and step 1's best (0.3)
        saved = load_file(run / folder / "model.safetensors")[name]
        assert torch.equal(saved, ema["shadow"][name].to(saved.dtype)) and not torch.equal(saved, weights)
        assert json.loads((run / folder / "eval_results.json").read_text())["AP"] == 0.5
    log = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    step2 = next(entry for entry in log if entry.get("step") == 2 and "eval_AP" in entry)
    assert (step2["eval_model_AP"], step2["eval_ema_AP"], step2["eval_AP"], step2["eval_ema_used"]) == (
        0.2,
        0.5,
        0.5,
        1,
    )


def test_trainer_early_stopping_count_survives_a_resume(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path / "cache"))
    _script_coco_scores(monkeypatch, [{"AP": 0.3}, {"AP": 0.1}])
    assert _train_in_process(tmp_path / "out", "--max_steps", "2", "--early_stopping_patience", "3") == 0
    _script_coco_scores(monkeypatch, [{"AP": 0.1}] * 3)
    assert _train_in_process(tmp_path / "out", "--max_steps", "10", "--early_stopping_patience", "3",
                             "--resume_from_checkpoint", "latest") == 0  # fmt: skip
    # Counted on from 1: steps 3 and 4 make it 3. A count restarted at 0 would stop at step 5.
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and not (tmp_path / "out" / "checkpoint-5").exists()
    assert state["stateful_callbacks"]["DetrEarlyStoppingCallback"]["attributes"] == {
        "early_stopping_patience_counter": 3
    }


def test_label_smoothing_factor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="--label_smoothing_factor is not supported"):
        _parse("--label_smoothing_factor", "0.1")


def test_bf16_on_a_machine_without_gpu_trains_on_the_cpu_without_use_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU runs bf16 itself")
    _, args = _parse("--bf16", "True")  # the Trainer alone raises "Your setup doesn't support bf16/gpu"
    assert args.bf16 and args.use_cpu


def test_trainer_ema_continues_from_the_checkpoint_resumed_from(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(tmp_path / "cache"))
    _script_coco_scores(monkeypatch, [{"AP": 0.3}] * 3, ema_scores=[{"AP": 0.1}] * 3)
    assert _train_in_process(tmp_path / "out", "--max_steps", "1", "--ema_decay", "0.5") == 0
    first = torch.load(tmp_path / "out" / "checkpoint-1" / "ema_state.pt", weights_only=True)
    assert _train_in_process(tmp_path / "out", "--max_steps", "2", "--ema_decay", "0.5",
                             "--resume_from_checkpoint", "latest") == 0  # fmt: skip
    second = torch.load(tmp_path / "out" / "checkpoint-2" / "ema_state.pt", weights_only=True)
    assert second["num_updates"] == 2  # a fresh average would have counted 1
    name = "class_labels_classifier.weight"
    weights = load_file(tmp_path / "out" / "checkpoint-2" / "model.safetensors")[name]
    decay = min(0.5, (1 + 1) / (10 + 1))  # the second update
    expected = decay * first["shadow"][name] + (1 - decay) * weights.float()
    torch.testing.assert_close(second["shadow"][name], expected, rtol=1e-6, atol=1e-7)
