"""`scripts/train.py` and `scripts/evaluate.py` end to end: real Accelerate processes, real files, pycocotools."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_detr_custom.testing_utils import TINY_FROM_SCRATCH_CONFIG
from tests.conftest import scalar_metrics

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic:num_train=12,num_val=6,image_size=64,seed=3"
TINY_MODEL = TINY_FROM_SCRATCH_CONFIG


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train")
    (path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    return path


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DETR_CUSTOM_CACHE=str(workdir / "cache"), OMP_NUM_THREADS="1")
    env.pop("WANDB_API_KEY", None)
    return env


def _train_command(workdir: Path, output_dir: Path, *extra: str, processes: int = 1) -> list[str]:
    script = [str(REPO / "scripts" / "train.py")]
    if processes > 1:
        launcher = _accelerate_launch(processes)
    else:
        launcher = [sys.executable]
    args = ["--data", DATA, "--model", str(workdir / "tiny.json"), "--output_dir", str(output_dir)]
    args += ["--report_to", "none", "--logging_steps", "1", "--per_device_train_batch_size", "2"]
    return launcher + script + args + list(extra)


def _accelerate_launch(processes: int) -> list[str]:
    # `accelerate launch --cpu --num_processes N` starts ONE process unless an MPI hostfile is given (accelerate
    # 1.x); `--multi_gpu` goes through torchrun, and the scripts pick CPU + gloo when there is no GPU.
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    return launcher + ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def _run(command: list[str], workdir: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _evaluate(workdir: Path, model_dir: Path, name: str, *extra: str) -> tuple[dict, list]:
    metrics, detections = workdir / f"{name}.json", workdir / f"{name}-detections.json"
    command = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--model", str(model_dir), "--data", DATA]
    _run(command + ["--output", str(metrics), "--detections", str(detections), *extra], workdir)
    return json.loads(metrics.read_text()), json.loads(detections.read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_two_process_run_trains_evaluates_and_saves(workdir: Path) -> None:
    output_dir = workdir / "ddp"
    result = _run(_train_command(workdir, output_dir, "--max_steps", "4", processes=2), workdir)
    assert "Training on 2 process(es) (MULTI_CPU" in result.stdout
    assert "COCO bbox" in result.stdout and "AR100" in result.stdout  # the metrics table
    last = output_dir / "last"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "eval_results.json"):
        assert (last / name).is_file(), name
    config = json.loads((last / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"].endswith("DetrCustomForObjectDetection")
    assert set(config["id2label"].values()) == {"rectangle", "ellipse", "triangle"}
    card = (last / "README.md").read_text()
    assert "pipeline_tag: object-detection" in card and "library_name: transformers" in card
    trained = json.loads((last / "eval_results.json").read_text())

    # The 2-process evaluation during training equals a 1-process evaluation of the saved checkpoint, and
    # neither the batch size nor the number of processes changes a single detection.
    single, single_dets = _evaluate(workdir, last, "eval-1proc", "--per_device_eval_batch_size", "4")
    assert scalar_metrics(single) == pytest.approx(scalar_metrics(trained), abs=1e-9)
    assert set(single["per_class"]) == {"rectangle", "ellipse", "triangle"}
    metrics, detections = workdir / "eval-2proc.json", workdir / "eval-2proc-detections.json"
    command = _accelerate_launch(2) + [str(REPO / "scripts" / "evaluate.py"), "--model", str(last), "--data", DATA]
    _run(command + ["--output", str(metrics), "--detections", str(detections)], workdir)
    assert scalar_metrics(json.loads(metrics.read_text())) == pytest.approx(scalar_metrics(single), abs=1e-9)
    key = lambda d: (d["image_id"], d["category_id"], round(d["score"], 5), [round(v, 3) for v in d["bbox"]])  # noqa: E731
    assert sorted(map(key, json.loads(detections.read_text()))) == sorted(map(key, single_dets))
    assert len(single_dets) == 6 * TINY_MODEL["num_queries"]  # every query of every val image, once


def test_two_machines_of_one_process_match_the_two_process_run(workdir: Path) -> None:
    # The README's multi-node command on localhost: two "machines" (one process each) rendezvous at
    # --main_process_ip and train data-parallel exactly as two processes of one machine do.
    reference = workdir / "ddp" / "last"
    if not reference.is_dir():
        _run(_train_command(workdir, workdir / "ddp", "--max_steps", "4", processes=2), workdir)
    with socket.socket() as probe:  # a free port both machines agree on
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    output_dir = workdir / "two-machines"
    machines = []
    for rank in (0, 1):
        accelerate = str(Path(sys.executable).parent / "accelerate")
        launcher = [accelerate, "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank)]
        launcher += ["--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port]
        launcher += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        command = _train_command(workdir, output_dir, "--max_steps", "4")
        command = launcher + command[1:]  # the script and its arguments, without `python`
        machines.append(subprocess.Popen(command, cwd=workdir, env=_env(workdir), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [machine.communicate(timeout=600)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "Training on 2 process(es) (MULTI_CPU" in outputs[0]
    expected, trained = _weights(reference), _weights(output_dir / "last")
    assert expected.keys() == trained.keys()
    for name in expected:
        torch.testing.assert_close(trained[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_resume_after_kill_matches_uninterrupted_run(workdir: Path) -> None:
    common = ("--max_steps", "6", "--save_steps", "2", "--eval_steps", "100", "--ema_decay", "0.9")
    _run(_train_command(workdir, workdir / "straight", *common, "--report_to", "tensorboard"), workdir)
    _assert_every_loss_term_logged(workdir / "straight" / "runs")

    interrupted = workdir / "interrupted"
    process = subprocess.Popen(
        _train_command(workdir, interrupted, *common), cwd=workdir, env=_env(workdir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (interrupted / "checkpoint-2").is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (interrupted / "checkpoint-2").is_dir(), "the run never wrote its first checkpoint"
    assert not (interrupted / "last").exists(), "killed too late to test resuming"
    # A half-written checkpoint (as a kill during saving leaves) is never picked up.
    (interrupted / "checkpoint-99.tmp").mkdir()

    result = _run(_train_command(workdir, interrupted, *common, "--resume_from_checkpoint", "latest"), workdir)
    assert "Resumed from" in result.stdout + result.stderr
    straight, resumed = _weights(workdir / "straight" / "last"), _weights(interrupted / "last")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)
    # The EMA of the weights continues as if never interrupted (custom_checkpoint_1: the EMA after the scheduler).
    ema = [torch.load(run / "checkpoint-6" / "custom_checkpoint_1.pkl", weights_only=True) for run in (
        workdir / "straight", interrupted)]  # fmt: skip
    assert ema[0]["num_updates"] == ema[1]["num_updates"] == 6
    for name, value in ema[0]["shadow"].items():
        torch.testing.assert_close(ema[1]["shadow"][name], value, rtol=0, atol=1e-6, msg=name)


def _assert_every_loss_term_logged(log_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = list(log_dir.rglob("events.out.tfevents.*"))
    assert event_files, f"no tensorboard events under {log_dir}"
    tags = set()
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    terms = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error", "loss_ce_aux", "lr")
    assert {f"train/{t}" for t in terms} <= tags, tags
    assert {"eval/AP", "eval/AP50", "eval/AR100"} <= tags, tags


def test_bad_arguments_and_bad_model_give_one_line_errors(workdir: Path) -> None:
    result = subprocess.run(
        _train_command(workdir, workdir / "bad", "--mixed_precision", "fp8"),
        cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "--mixed_precision must be" in result.stderr
    assert "Traceback" not in result.stderr
    command = _train_command(workdir, workdir / "bad", "--max_steps", "1")
    command[command.index("--model") + 1] = "no-such-preset"
    result = subprocess.run(command, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "no-such-preset" in result.stderr and "Traceback" not in result.stderr


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for option in ("--data", "--model", "--lr_backbone", "--lr_drop", "--max_grad_norm", "--resume_from_checkpoint",
                   "--mixed_precision", "--push_to_hub", "--hub_model_id", "--no_augment", "--report_to"):  # fmt: skip
        assert option in result.stdout
    assert result.stdout.count("(default:") >= 20 or "default" in result.stdout


def test_model_help_names_every_preset() -> None:
    from dataclasses import fields

    from modeling_detr_custom.training.arguments import DetrDataArguments
    from modeling_detr_custom.training.models import MODEL_PRESETS

    help_text = next(f for f in fields(DetrDataArguments) if f.name == "model").metadata["help"]
    for preset in MODEL_PRESETS:
        assert f"'{preset}'" in help_text, preset


@pytest.fixture(autouse=True)
def _cleanup_cache(workdir: Path):
    yield
    shutil.rmtree(workdir / "bad", ignore_errors=True)
