"""Steering a training run: EMA of the weights, the metric that picks `best/`, early stopping, warmup and schedules.

The loop tests run `scripts/train.py`'s `main` in process on a tiny model; where the outcome depends on scores, the
evaluation is replaced by a scripted one (`_scripted_scores`) so the rule itself is what is tested.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from modeling_detr_custom.apps.cli.train import main as train_main
from modeling_detr_custom.testing_utils import TINY_FROM_SCRATCH_CONFIG
from modeling_detr_custom.training import loop
from modeling_detr_custom.training.arguments import DetrTrainingArguments
from modeling_detr_custom.training.checkpointing import PROGRESS_FILE
from modeling_detr_custom.training.ema import ModelEma
from modeling_detr_custom.training.optim import build_lr_scheduler
from tests.conftest import scripted_scores

DATA = "synthetic:num_train=4,num_val=2,image_size=64,seed=3"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workflow")
    (path / "tiny.json").write_text(json.dumps(TINY_FROM_SCRATCH_CONFIG))
    return path


@pytest.fixture(autouse=True)
def _offline_cache(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(workdir / "cache"))


def _train(workdir: Path, name: str, *extra: str, fresh: bool = True) -> Path:
    output_dir = workdir / name
    if fresh:
        shutil.rmtree(output_dir, ignore_errors=True)
    argv = ["--data", DATA, "--output_dir", str(output_dir), "--report_to", "none", "--model"]
    argv += [str(workdir / "tiny.json"), "--per_device_train_batch_size", "2", "--logging_steps", "1"]
    assert train_main(argv + list(extra)) == 0
    return output_dir


def _progress(checkpoint: Path) -> dict:
    return json.loads((checkpoint / PROGRESS_FILE).read_text())


def _scripted_scores(monkeypatch: pytest.MonkeyPatch, model_scores: list[dict], ema_scores: list[dict] = ()) -> None:
    next_scores = scripted_scores(monkeypatch, model_scores, ema_scores)
    monkeypatch.setattr(loop, "_score", lambda run: next_scores())


# --- EMA ------------------------------------------------------------------------------------------------------------


def test_ema_follows_the_formula_with_its_warmup_and_restores_the_weights_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEma(model, decay=0.9)
    expected = {k: v.float().clone() for k, v in start.items() if v.is_floating_point()}
    for n in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # moves the BatchNorm statistics too
        decay = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(decay)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
        ema.update(model)
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v, rtol=1e-6, atol=1e-7, msg=k)
    assert ema.shadow["1.num_batches_tracked"] == 3
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied_to(model):
        torch.testing.assert_close(model[0].weight, expected["0.weight"], rtol=1e-6, atol=1e-7)
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k  # exactly the trained weights again
    copy = ModelEma(model, decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.num_updates == 3 and all(torch.equal(copy.shadow[k], ema.shadow[k]) for k in ema.shadow)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_ema_decay_is_named(decay: float) -> None:
    with pytest.raises(ValueError, match="--ema_decay"):
        DetrTrainingArguments(ema_decay=decay)


def test_best_and_last_hold_the_ema_when_it_scores_higher(workdir: Path, monkeypatch) -> None:
    _scripted_scores(monkeypatch, [{"AP": 0.3}, {"AP": 0.2}], ema_scores=[{"AP": 0.1}, {"AP": 0.5}])
    run = _train(workdir, "ema-best", "--max_steps", "2", "--eval_steps", "1", "--save_steps", "1",
                 "--ema_decay", "0.5")  # fmt: skip
    progress = _progress(run / "checkpoint-2")
    # step 1: the weights (0.3) beat their EMA (0.1); step 2: the EMA (0.5) beats the weights (0.2) and the best.
    assert progress["weights"] == "ema" and progress["best_weights"] == "ema" and progress["best_step"] == 2
    assert progress["metrics"]["AP"] == 0.5
    ema_state = torch.load(run / "checkpoint-2" / "custom_checkpoint_1.pkl", weights_only=True)["shadow"]
    weights = load_file(run / "checkpoint-2" / "model.safetensors")
    for folder in ("best", "last"):
        saved = load_file(run / folder / "model.safetensors")
        name = "class_labels_classifier.weight"
        torch.testing.assert_close(saved[name], ema_state[name], rtol=0, atol=0)
        assert not torch.equal(saved[name], weights[name])
        assert json.loads((run / folder / "eval_results.json").read_text())["AP"] == 0.5


def test_ties_between_the_weights_and_their_ema_keep_the_weights(workdir: Path, monkeypatch) -> None:
    _scripted_scores(monkeypatch, [{"AP": 0.3}], ema_scores=[{"AP": 0.3}])
    run = _train(workdir, "ema-tie", "--max_steps", "1", "--eval_steps", "1", "--ema_decay", "0.5")
    weights = load_file(run / "checkpoint-1" / "model.safetensors")
    assert torch.equal(load_file(run / "last" / "model.safetensors")["bbox_predictor.layers.0.weight"],
                       weights["bbox_predictor.layers.0.weight"])  # fmt: skip
    assert _progress(run / "checkpoint-1")["weights"] == "model"


# --- the metric that picks best/ -----------------------------------------------------------------------------------


def test_metric_for_best_model_picks_best_and_ties_keep_the_earlier(workdir: Path, monkeypatch) -> None:
    _scripted_scores(monkeypatch, [{"AP": 0.5, "AP50": 0.1}, {"AP": 0.1, "AP50": 0.4}, {"AP": 0.2, "AP50": 0.4}])
    run = _train(workdir, "metric", "--max_steps", "3", "--eval_steps", "1", "--save_steps", "1",
                 "--metric_for_best_model", "eval_AP50")  # fmt: skip
    progress = _progress(run / "checkpoint-3")
    assert progress["best_step"] == 2 and progress["best_metrics"]["AP50"] == 0.4  # not 3: a tie keeps step 2
    assert json.loads((run / "best" / "eval_results.json").read_text())["AP"] == 0.1


def test_greater_is_better_false_keeps_the_lowest(workdir: Path, monkeypatch) -> None:
    _scripted_scores(monkeypatch, [{"AR1": 0.5}, {"AR1": 0.2}, {"AR1": 0.3}])
    run = _train(workdir, "lower", "--max_steps", "3", "--eval_steps", "1", "--save_steps", "3",
                 "--metric_for_best_model", "AR1", "--greater_is_better", "False")  # fmt: skip
    assert _progress(run / "checkpoint-3")["best_step"] == 2


def test_unknown_metric_for_best_model_lists_the_reported_ones() -> None:
    with pytest.raises(ValueError, match=r"--metric_for_best_model 'mAP' is not a reported metric; .*AP50"):
        DetrTrainingArguments(metric_for_best_model="mAP")


# --- early stopping -------------------------------------------------------------------------------------------------


def test_early_stopping_stops_after_patience_evaluations_without_improvement(workdir: Path, monkeypatch, capsys):
    # 0.30 -> 0.305 is an improvement, but not by more than the threshold 0.01.
    _scripted_scores(monkeypatch, [{"AP": 0.3}, {"AP": 0.305}, {"AP": 0.2}, {"AP": 0.9}])
    run = _train(workdir, "early", "--max_steps", "10", "--eval_steps", "1", "--save_steps", "1",
                 "--early_stopping_patience", "2", "--early_stopping_threshold", "0.01")  # fmt: skip
    assert "Early stopping at step 3" in capsys.readouterr().out
    assert not (run / "checkpoint-4").exists() and (run / "last" / "config.json").is_file()
    progress = _progress(run / "checkpoint-3")
    assert progress["evaluations_without_improvement"] == 2 and progress["best_step"] == 2  # best: 0.305 > 0.3


def test_early_stopping_count_survives_a_resume(workdir: Path, monkeypatch, capsys) -> None:
    _scripted_scores(monkeypatch, [{"AP": 0.3}, {"AP": 0.1}])
    run = _train(workdir, "early-resume", "--max_steps", "2", "--eval_steps", "1", "--save_steps", "1",
                 "--early_stopping_patience", "3")  # fmt: skip
    assert _progress(run / "checkpoint-2")["evaluations_without_improvement"] == 1
    _scripted_scores(monkeypatch, [{"AP": 0.1}, {"AP": 0.1}, {"AP": 0.1}])
    _train(workdir, "early-resume", "--resume_from_checkpoint", "latest", "--max_steps", "10", fresh=False)
    # Counted on from 1: steps 3 and 4 make it 3. A count restarted at 0 would stop at step 5.
    assert "Early stopping at step 4" in capsys.readouterr().out


# --- warmup and schedules --------------------------------------------------------------------------------------------


def _lrs(scheduler_type: str, steps: int = 10, warmup: int = 0, drop: int | None = None) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_lr_scheduler(
        optimizer, drop, warmup_steps=warmup, scheduler_type=scheduler_type, num_training_steps=steps
    )
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_schedule_warms_up_then_drops_tenfold() -> None:
    assert _lrs("step", warmup=4, drop=6) == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1, 0.1, 0.1, 0.1, 0.1])


def test_cosine_and_linear_are_the_trainers_schedules() -> None:
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(optimizer, 2, 10)
    expected = [reference.lr_lambdas[0](step) for step in range(10)]
    assert _lrs("cosine", warmup=2) == pytest.approx(expected)
    assert _lrs("linear", warmup=0) == pytest.approx([1 - s / 10 for s in range(10)])


def test_warmup_steps_counts_as_the_trainer_counts_them() -> None:
    assert DetrTrainingArguments(warmup_steps=5).num_warmup_steps(100) == 5
    assert DetrTrainingArguments(warmup_steps=0.05).num_warmup_steps(110) == math.ceil(5.5)
    assert DetrTrainingArguments(warmup_ratio=0.1).num_warmup_steps(100) == 10


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lr_scheduler_type": "polynomial"}, "--lr_scheduler_type must be one of step, cosine"),
        ({"lr_scheduler_type": "constant", "warmup_steps": 10}, "use constant_with_warmup"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, "not both"),
        ({"warmup_ratio": 1.5}, "--warmup_ratio in"),
        ({"eval_strategy": "sometimes"}, "--eval_strategy must be"),
        ({"early_stopping_patience": 2, "eval_strategy": "no"}, "--early_stopping_patience needs evaluations"),
    ],
)
def test_bad_schedule_and_selection_options_are_named(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetrTrainingArguments(**fields)


def test_warmup_reaches_the_optimizer_in_a_run(workdir: Path) -> None:
    run = _train(workdir, "warmup", "--max_steps", "2", "--eval_strategy", "no", "--save_steps", "1",
                 "--warmup_steps", "4", "--lr_scheduler_type", "cosine")  # fmt: skip
    state = torch.load(run / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state["_last_lr"][0] == pytest.approx(1e-4 * 2 / 4)


# --- freezing the backbone -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [("--freeze_backbone",), ("--lr_backbone", "0")])
def test_a_frozen_backbone_keeps_its_weights_and_batch_norm_statistics(workdir: Path, flag: tuple[str, ...]) -> None:
    # The tiny model trains BatchNorm in every stage: without freezing, its running statistics move at every step.
    run = _train(workdir, "frozen", "--max_steps", "2", "--eval_strategy", "no", "--save_steps", "1", *flag)
    first, second = (load_file(run / f"checkpoint-{step}" / "model.safetensors") for step in (1, 2))
    backbone = [name for name in first if ".backbone." in name]
    assert any("running_mean" in name for name in backbone)
    for name in backbone:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["class_labels_classifier.weight"], second["class_labels_classifier.weight"])


# --- checks before training, banner, model card, fine-tuning size --------------------------------------------------


def test_push_to_hub_without_a_token_fails_before_training(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(workdir / "no-hf-home"))  # no `hf auth login` token either
    argv = ["--data", DATA, "--output_dir", str(workdir / "push"), "--report_to", "none", "--max_steps", "1"]
    assert train_main(argv + ["--push_to_hub", "--model", str(workdir / "tiny.json")]) == 1
    captured = capsys.readouterr()
    assert "--push_to_hub (checked before training): No Hugging Face token" in captured.err
    assert "Training on" not in captured.out and not (workdir / "push").exists()


def test_fp16_on_the_cpu_is_refused_by_name(workdir: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU runs fp16")
    for flag in (["--mixed_precision", "fp16"], ["--fp16"]):
        argv = ["--data", DATA, "--output_dir", str(workdir / "fp16"), "--report_to", "none", "--max_steps", "1"]
        assert train_main(argv + flag) == 1
        assert "--mixed_precision fp16 needs a GPU" in capsys.readouterr().err


def test_banner_gives_the_images_per_optimizer_step_with_accumulation(workdir: Path, capsys) -> None:
    _train(workdir, "banner", "--max_steps", "1", "--eval_strategy", "no", "--gradient_accumulation_steps", "2")
    out = capsys.readouterr().out
    assert "2 images per process per batch, 2 batches accumulated: 4 images per optimizer step." in out


def test_model_card_of_a_local_run_loads_its_own_folder(workdir: Path) -> None:
    run = _train(workdir, "card", "--max_steps", "1", "--eval_strategy", "no")
    card = (run / "last" / "README.md").read_text()
    assert f'model="{run / "last"}"' in card and 'model="last"' not in card


def test_fine_tuning_keeps_the_checkpoints_image_size(workdir: Path) -> None:
    from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomImageProcessor

    checkpoint = workdir / "base-96"
    DetrCustomForObjectDetection(DetrCustomConfig(**TINY_FROM_SCRATCH_CONFIG)).save_pretrained(checkpoint)
    size = {"shortest_edge": 96, "longest_edge": 160}
    DetrCustomImageProcessor(size=size).save_pretrained(checkpoint)
    output_dir = workdir / "finetuned"
    shutil.rmtree(output_dir, ignore_errors=True)
    argv = ["--data", DATA, "--model", str(checkpoint), "--output_dir", str(output_dir), "--report_to", "none"]
    assert train_main(argv + ["--max_steps", "1", "--eval_strategy", "no"]) == 0
    assert json.loads((output_dir / "last" / "preprocessor_config.json").read_text())["size"] == size


def test_training_arguments_names_bf16_and_fp16_set_mixed_precision() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(DetrTrainingArguments).parse_args_into_dataclasses(args=["--bf16"])
    assert args.mixed_precision == "bf16" and args.bf16 and not args.fp16
    assert DetrTrainingArguments(mixed_precision="bf16").bf16  # either spelling, one value in the run file
    with pytest.raises(ValueError, match="--fp16 contradicts --mixed_precision bf16"):
        DetrTrainingArguments(mixed_precision="bf16", fp16=True)
