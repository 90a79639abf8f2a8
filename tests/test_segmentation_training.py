"""`scripts/train.py --task panoptic|instance` end to end on a tiny model and synthetic masks: the metrics, the saved
segmentation checkpoint (Auto class, pipeline), `--freeze_detector`, and the one-line errors of bad combinations."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageSegmentation, pipeline

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomForSegmentation
from modeling_detr_custom.apps.cli.train import main as train_main
from modeling_detr_custom.data import load_detection_split
from modeling_detr_custom.data.synthetic import PANOPTIC_CATEGORIES
from modeling_detr_custom.testing_utils import TINY_SEGMENTATION_CONFIG

DATA = "synthetic:num_train=4,num_val=2,image_size=64,seed=3"
# Trainable BatchNorm in every stage: a detector that is not really frozen would move its running statistics.
TINY = {
    **TINY_SEGMENTATION_CONFIG,
    "encoder_layers": 1,
    "freeze_backbone_batch_norm": False,
    "backbone_trainable_layers": 5,
}
PANOPTIC_NAMES = {i: category["name"] for i, category in enumerate(PANOPTIC_CATEGORIES)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("segmentation_training")
    (path / "tiny.json").write_text(json.dumps(TINY))
    return path


@pytest.fixture(autouse=True)
def _offline_cache(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(workdir / "cache"))


def _train(workdir: Path, name: str, *extra: str, model: str | None = None) -> Path:
    output_dir = workdir / name
    shutil.rmtree(output_dir, ignore_errors=True)
    argv = ["--data", DATA, "--output_dir", str(output_dir), "--report_to", "none", "--logging_steps", "1"]
    argv += ["--model", model or str(workdir / "tiny.json"), "--per_device_train_batch_size", "2"]
    assert train_main(argv + list(extra)) == 0
    return output_dir


@pytest.fixture(scope="module")
def panoptic_run(workdir: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETR_CUSTOM_CACHE", str(workdir / "cache"))
        return _train(workdir, "panoptic", "--task", "panoptic", "--max_steps", "2", "--save_steps", "1")


def test_the_data_layer_gives_masks_to_the_training_transform(workdir: Path) -> None:
    for task, num_labels, train in (("panoptic", 6, False), ("panoptic", 6, True), ("instance", 3, True)):
        split = load_detection_split(DATA, "train", train=train, task=task)
        assert split.mapping.num_labels == num_labels
        for item in (split.dataset[index] for index in range(len(split))):
            labels, (height, width) = item["labels"], item["pixel_values"].shape[-2:]
            masks = labels["masks"]
            assert masks.shape == (len(labels["class_labels"]), height, width) and masks.dtype == torch.uint8
            if task == "panoptic" and not train:  # things and stuff cover every pixel of a panoptic image, once
                assert torch.equal(masks.sum(0), torch.ones(height, width, dtype=masks.dtype))
    assert split.coco.loadAnns(split.coco.getAnnIds())[0]["segmentation"]["counts"]  # mask AP ground truth


def test_data_without_masks_is_refused_by_name(tmp_path: Path) -> None:
    from modeling_detr_custom.data.synthetic import SyntheticSpec, write_synthetic_dataset

    folder = write_synthetic_dataset(tmp_path / "coco", SyntheticSpec(num_train=3, num_val=1, image_size=64))
    instances = folder / "annotations" / "instances_train.json"
    coco = json.loads(instances.read_text())
    first = coco["annotations"][0]
    del first["segmentation"]
    instances.write_text(json.dumps(coco))
    message = rf"Annotation {first['id']} of image .*{first['image_id']:06d}.png has no 'segmentation'; --task instance"
    with pytest.raises(ValueError, match=message):
        load_detection_split(str(folder), "train", task="instance")
    skipped = load_detection_split(str(folder), "train", task="instance", on_error="skip")
    kept = {row["image_id"]: len(row["annotations"]) for row in skipped.raw}
    assert kept[first["image_id"]] == sum(1 for a in coco["annotations"] if a["image_id"] == first["image_id"]) - 1
    (folder / "annotations" / "panoptic_train.json").unlink()
    with pytest.raises(FileNotFoundError, match="No panoptic annotation file .* panoptic splits in .*: \\['val'\\]"):
        load_detection_split(str(folder), "train", task="panoptic")


def test_panoptic_run_reports_pq_and_saves_a_segmentation_checkpoint(panoptic_run: Path, capsys) -> None:
    last = panoptic_run / "last"
    metrics = json.loads((last / "eval_results.json").read_text())
    for name in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50"):
        assert isinstance(metrics[name], float), name
    assert set(metrics["panoptic_per_class"]) <= set(PANOPTIC_NAMES.values())
    arguments = json.loads((panoptic_run / "training_args.json").read_text())["arguments"]
    assert arguments["metric_for_best_model"] == "PQ" and (panoptic_run / "best").is_dir()
    assert "pipeline_tag: image-segmentation" in (last / "README.md").read_text()
    model = AutoModelForImageSegmentation.from_pretrained(last)
    assert type(model) is DetrCustomForSegmentation and model.config.id2label == PANOPTIC_NAMES
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    segments = pipeline("image-segmentation", model=str(last))(image, subtask="panoptic", threshold=0.0)
    assert all(set(s) == {"score", "label", "mask"} and s["mask"].size == (64, 64) for s in segments)


def test_instance_run_reports_mask_ap(workdir: Path, capsys) -> None:
    run = _train(workdir, "instance", "--task", "instance", "--max_steps", "1")
    metrics = json.loads((run / "last" / "eval_results.json").read_text())
    for name in ("segm_AP", "segm_AP50", "segm_AR100", "AP"):
        assert name in metrics
    assert "segm_AP" in capsys.readouterr().out  # the metrics table
    assert json.loads((run / "training_args.json").read_text())["arguments"]["metric_for_best_model"] == "segm_AP"
    assert type(DetrCustomForSegmentation.from_pretrained(run / "last")) is DetrCustomForSegmentation


def test_freeze_detector_trains_the_mask_head_of_a_detection_checkpoint_only(workdir: Path) -> None:
    detector_dir = workdir / "detector"
    torch.manual_seed(0)
    config = DetrCustomConfig(**{**TINY, "num_labels": len(PANOPTIC_NAMES)}, id2label=PANOPTIC_NAMES)
    DetrCustomForObjectDetection(config).save_pretrained(detector_dir)
    run = _train(workdir, "frozen", "--task", "panoptic", "--freeze_detector", "--max_steps", "2",
                 "--eval_strategy", "no", model=str(detector_dir))  # fmt: skip
    detector, trained = load_file(detector_dir / "model.safetensors"), load_file(run / "last" / "model.safetensors")
    assert any("running_mean" in name for name in detector)
    for name, value in detector.items():
        assert torch.equal(trained[f"detr.{name}"], value), name
    start = DetrCustomForSegmentation.from_detector(str(detector_dir)).state_dict()
    moved = [name for name in trained if name.startswith("mask_head.") and not torch.equal(trained[name], start[name])]
    assert moved  # the mask head did train


def test_freeze_detector_on_a_segmentation_checkpoint_keeps_its_detector(workdir: Path, panoptic_run: Path) -> None:
    run = _train(workdir, "frozen-segmentation", "--task", "panoptic", "--freeze_detector", "--max_steps", "1",
                 "--eval_strategy", "no", model=str(panoptic_run / "last"))  # fmt: skip
    before, after = (
        load_file(panoptic_run / "last" / "model.safetensors"),
        load_file(run / "last" / "model.safetensors"),
    )
    detector = [name for name in before if name.startswith("detr.")]
    assert detector and all(torch.equal(before[name], after[name]) for name in detector)
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("bbox_attention."))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--freeze_detector",), "--freeze_detector trains a mask head on a frozen detector: it needs --task"),
        (("--task", "panoptic", "--freeze_detector"), "builds a fresh model"),
        (("--task", "semantic"), "--task must be one of detection, panoptic, instance"),
        (("--metric_for_best_model", "PQ"), "'PQ' is not a reported metric"),
        (("--task", "instance", "--metric_for_best_model", "PQ"), "'PQ' is not a reported metric"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(workdir: Path, capsys, extra, message) -> None:
    argv = ["--data", DATA, "--output_dir", str(workdir / "refused"), "--model", str(workdir / "tiny.json")]
    assert message in _refusal(argv + ["--report_to", "none", *extra], capsys)


def test_checkpoints_of_the_wrong_kind_are_refused_in_one_line(workdir: Path, panoptic_run: Path, capsys) -> None:
    other_classes = workdir / "detector-3-classes"
    DetrCustomForObjectDetection(DetrCustomConfig(**TINY)).save_pretrained(other_classes)
    cases = [
        (["--model", str(panoptic_run / "last")], "is a segmentation checkpoint; train it with --task panoptic"),
        (["--model", str(other_classes), "--task", "panoptic", "--freeze_detector"], "not the data's"),
    ]
    for extra, message in cases:
        argv = ["--data", DATA, "--output_dir", str(workdir / "refused"), "--report_to", "none", *extra]
        assert message in _refusal(argv, capsys)


def _refusal(argv: list[str], capsys) -> str:
    """The last line on stderr of a run that must be refused (argument errors exit 2, loading errors return 1)."""
    try:
        code = train_main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code in (1, 2)
    return capsys.readouterr().err.strip().splitlines()[-1]
