"""Building blocks of the training scripts: parameter groups, schedule, checkpoint discovery, loss logging."""

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

from modeling_detr_custom.data import CategoryMapping
from modeling_detr_custom.training.arguments import DetrTrainingArguments
from modeling_detr_custom.training.checkpointing import PROGRESS_FILE, find_latest_checkpoint
from modeling_detr_custom.training.logging_utils import LossMeter, summarize_loss_dict
from modeling_detr_custom.training.models import load_model_for_training
from modeling_detr_custom.training.optim import build_lr_scheduler, build_optimizer, build_param_groups
from tests.conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps({k: v for k, v in TINY_CONFIG.items() if k != "num_labels"}))
    return path


def test_param_groups_split_backbone_and_skip_frozen(tiny_model_file: Path) -> None:
    model, _ = load_model_for_training(str(tiny_model_file), CategoryMapping([1, 7, 90], ["a", "b", "c"]))
    groups = {g["name"]: g for g in build_param_groups(model, 1e-4, 1e-5, 1e-4)}
    assert groups["backbone"]["lr"] == 1e-5 and groups["transformer"]["lr"] == 1e-4
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("backbone" in names[id(p)] for p in groups["backbone"]["params"])
    assert not any("backbone" in names[id(p)] for p in groups["transformer"]["params"])
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trainable parameter once, no frozen one
    assert len(build_param_groups(model, 1e-4, 0.0, 1e-4)) == 1  # lr_backbone 0: backbone untouched


def test_lr_drops_tenfold_at_the_drop_step(tiny_model_file: Path) -> None:
    model, _ = load_model_for_training(str(tiny_model_file), CategoryMapping([1, 2, 3]))
    optimizer = build_optimizer(model, 1e-4, 1e-5, 1e-4)
    scheduler = build_lr_scheduler(optimizer, lr_drop_step=3)
    lrs = []
    for _ in range(5):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[2] == pytest.approx([1e-4, 1e-5]) and lrs[3] == pytest.approx([1e-5, 1e-6])


def test_fused_adamw_is_the_default_and_updates_like_the_reference_loop(tiny_model_file: Path) -> None:
    model, _ = load_model_for_training(str(tiny_model_file), CategoryMapping([1, 2, 3]))
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = build_optimizer(model, 1e-3, 1e-4, 1e-4)
    assert optimizer.defaults["fused"] is True  # CPU here; fused wherever torch has the kernel
    loop = build_optimizer(reference, 1e-3, 1e-4, 1e-4, fused=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for param, twin in zip(model.parameters(), reference.parameters(), strict=True):
            if param.requires_grad:
                param.grad = torch.randn(param.shape, generator=generator)
                twin.grad = param.grad.clone()
        optimizer.step(), loop.step()
    for (name, param), twin in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param, twin, atol=1e-6, rtol=1e-5, msg=name)
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), initial.parameters(), strict=True)]
    assert sum(moved) == sum(p.requires_grad for p in model.parameters())  # every trainable parameter was updated


def test_lr_drop_steps_overrides_the_epoch_drop() -> None:
    by_epoch = DetrTrainingArguments(data="d", output_dir="o", lr_drop=2, max_steps=100)
    assert by_epoch.lr_drop_step(steps_per_epoch=30) == 60
    by_step = DetrTrainingArguments(data="d", output_dir="o", lr_drop=2, lr_drop_steps=75, max_steps=100)
    assert by_step.lr_drop_step(steps_per_epoch=30) == 75
    with pytest.raises(ValueError, match="--lr_drop_steps"):
        DetrTrainingArguments(data="d", output_dir="o", lr_drop_steps=-1, max_steps=100)


def test_model_config_carries_the_data_set_categories(tiny_model_file: Path) -> None:
    model, base = load_model_for_training(str(tiny_model_file), CategoryMapping([1, 7, 90], ["a", "b", "c"]))
    assert base is None
    assert model.config.num_labels == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert model.config.category_ids == [1, 7, 90]
    assert model.class_labels_classifier.out_features == 4  # 3 classes + no object
    with pytest.raises(ValueError, match="no-such"):
        load_model_for_training("no-such", CategoryMapping([1]))


def test_latest_checkpoint_ignores_half_written_ones(tmp_path: Path) -> None:
    assert find_latest_checkpoint(tmp_path) is None
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / PROGRESS_FILE).write_text("{}")
    (tmp_path / "checkpoint-30.tmp").mkdir()  # killed while saving
    (tmp_path / "checkpoint-40").mkdir()  # no completion marker
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"


def test_loss_log_sums_auxiliary_terms_per_kind() -> None:
    loss_dict = {
        "loss_ce": torch.tensor(1.0),
        "loss_ce_0": torch.tensor(2.0),
        "loss_ce_1": torch.tensor(3.0),
        "loss_bbox": torch.tensor(0.5),
        "cardinality_error": torch.tensor(4.0),
        "cardinality_error_0": torch.tensor(1.0),
        "class_error": torch.tensor(50.0),
    }
    summary = {k: v.item() for k, v in summarize_loss_dict(loss_dict).items()}
    assert summary == {
        "loss_ce": 1.0,
        "loss_ce_aux": 5.0,
        "loss_bbox": 0.5,
        "cardinality_error": 4.0,
        "cardinality_error_aux": 1.0,
        "class_error": 50.0,
    }
    meter = LossMeter()
    meter.update(torch.tensor(2.0), {"loss_ce": torch.tensor(1.0)})
    meter.update(torch.tensor(4.0), {"loss_ce": torch.tensor(3.0)})
    assert {k: v.item() for k, v in meter.means().items()} == {"loss": 3.0, "loss_ce": 2.0}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mixed_precision", "fp8", "--mixed_precision"),
        ("report_to", "mlflow", "--report_to"),
        ("on_bad_data", "ignore", "--on_bad_data"),
        ("per_device_train_batch_size", 0, "--per_device_train_batch_size"),
    ],
)
def test_bad_training_arguments_name_the_option(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetrTrainingArguments(**{field: value})


def test_non_finite_loss_stops_the_step_and_names_the_images() -> None:
    from modeling_detr_custom.training.loop import NonFiniteLossError, check_finite_loss

    labels = [{"image_id": torch.tensor(17)}, {"image_id": torch.tensor(42)}]
    check_finite_loss(torch.tensor(1.0), {"loss_ce": torch.tensor(1.0)}, labels, step=3)
    loss_dict = {"loss_ce": torch.tensor(0.5), "loss_giou": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(terms: loss_giou\).*\[17, 42\]"):
        check_finite_loss(torch.tensor(float("nan")), loss_dict, labels, step=3)


def test_single_process_cpu_launch_is_called_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeling_detr_custom.training.distributed import make_accelerator

    # What `accelerate launch --cpu --num_processes 2` leaves in the environment of its one process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.warns(UserWarning, match="--multi_gpu --num_processes N"):
        accelerator = make_accelerator()
    assert accelerator.num_processes == 1
    # What `accelerate launch --num_processes 2` (the help's example, no --cpu, no --multi_gpu) leaves on a CPU box.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    with pytest.warns(UserWarning, match="started a single process"):
        make_accelerator()
    monkeypatch.delenv("MASTER_PORT")  # `accelerate launch` of one process: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_accelerator()
