"""Reliability: each test is one "bad input or bad moment -> a named one-line error / nothing lost".

Resume: the run's arguments, its best score and its last evaluation survive a resume; disagreeing flags are named.
Checkpoints: a damaged newest checkpoint is reported and the previous one used; another run's folder is refused.
Output: `best/` and `last/` are replaced whole; full disks and unwritable folders give one line, nothing saved lost.
Bad data, images, model inputs and folders: one line naming the file, the entry and the field.
Evaluation and prediction: the same numbers whatever the batch size or the number of processes.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from modeling_detr_custom.apps.cli.train import main as train_main
from modeling_detr_custom.testing_utils import TINY_FROM_SCRATCH_CONFIG
from modeling_detr_custom.training.atomic_folders import recover_folder, replace_folder, temporary_sibling
from modeling_detr_custom.training.checkpointing import PROGRESS_FILE
from modeling_detr_custom.training.run_state import RUN_FILE
from tests.conftest import scalar_metrics

DATA = "synthetic:num_train=4,num_val=2,image_size=64,seed=3"


TINY_MODEL = TINY_FROM_SCRATCH_CONFIG


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reliability")
    (path / "tiny.json").write_text(json.dumps(TINY_MODEL))
    return path


@pytest.fixture(autouse=True)
def _offline_cache(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETR_CUSTOM_CACHE", str(workdir / "cache"))


def _train(output_dir: Path, *extra: str, model: Path | None = None) -> int:
    argv = ["--data", DATA, "--output_dir", str(output_dir), "--report_to", "none"]
    if model is not None:
        argv += ["--model", str(model), "--per_device_train_batch_size", "2", "--logging_steps", "1"]
    return train_main(argv + list(extra))


@pytest.fixture(scope="module")
def finished_run(workdir: Path) -> Path:
    """A 2-step run of a non-default model, evaluated and checkpointed at every step."""
    output_dir = workdir / "finished"
    code = _train(output_dir, "--max_steps", "2", "--save_steps", "1", "--eval_steps", "1", model=workdir / "tiny.json")
    assert code == 0
    return output_dir


def _copy(run: Path, name: str) -> Path:
    target = run.parent / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target)
    return target


def _progress(checkpoint: Path) -> dict:
    return json.loads((checkpoint / PROGRESS_FILE).read_text())


# --- resume: one run state --------------------------------------------------------------------------------------------


def test_every_run_writes_its_resolved_arguments(finished_run: Path, workdir: Path) -> None:
    saved = json.loads((finished_run / RUN_FILE).read_text())
    assert saved["arguments"]["model"] == str(workdir / "tiny.json") and saved["run_id"]
    assert _progress(finished_run / "checkpoint-2")["run_id"] == saved["run_id"]


def test_resume_with_only_data_and_output_dir_restores_the_model(finished_run: Path, capsys) -> None:
    # Without the restored --model, the default preset is built and loading the checkpoint fails (size mismatch).
    run = _copy(finished_run, "resume-minimal")
    capsys.readouterr()
    assert train_main(["--data", DATA, "--output_dir", str(run), "--resume_from_checkpoint", "latest",
                       "--max_steps", "3", "--report_to", "none"]) == 0  # fmt: skip
    assert "Resumed from" in capsys.readouterr().out
    assert _progress(run / "checkpoint-3")["step"] == 3


def test_the_readme_resume_command_runs_as_written(finished_run: Path) -> None:
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "--resume_from_checkpoint latest" in line)
    words = shlex.split(line)
    assert words[:2] == ["python", "scripts/train.py"]
    run = _copy(finished_run, "readme-resume")
    shutil.rmtree(run / "checkpoint-2")  # interrupted after step 1: no checkpoint-2, no last/
    shutil.rmtree(run / "last")
    argv = [{"path/to/coco": DATA, "outputs/my-detr": str(run)}.get(word, word) for word in words[2:]]
    assert train_main(argv) == 0
    assert _progress(run / "checkpoint-2")["step"] == 2 and (run / "last" / "config.json").is_file()


def test_resume_from_a_checkpoint_path_into_a_new_folder_restores_that_runs_arguments(finished_run, workdir) -> None:
    target = workdir / "continued-elsewhere"
    shutil.rmtree(target, ignore_errors=True)
    source = _copy(finished_run, "resume-path-source")
    argv = ["--data", DATA, "--output_dir", str(target), "--resume_from_checkpoint", str(source / "checkpoint-1")]
    assert train_main(argv) == 0
    saved = json.loads((target / RUN_FILE).read_text())
    assert saved["arguments"]["model"] == str(workdir / "tiny.json")
    assert saved["run_id"] != json.loads((source / RUN_FILE).read_text())["run_id"]  # a new run in a new folder
    assert _progress(target / "checkpoint-2")["run_id"] == saved["run_id"]


def test_flags_are_recognised_with_dashes_and_equals_signs() -> None:
    from modeling_detr_custom.training.run_state import flags_given

    argv = ["--model=x", "--learning-rate", "0.1", "--no_augment", "value-not-a-flag"]
    assert flags_given(argv) == {"model", "learning_rate", "no_augment"}


def test_resume_with_a_flag_that_disagrees_names_the_difference(finished_run: Path, capsys) -> None:
    run = _copy(finished_run, "resume-disagree")
    code = _train(run, "--resume_from_checkpoint", "latest", "--learning_rate", "0.5", "--max_steps", "3")
    err = capsys.readouterr().err
    assert code == 1 and "--learning_rate 0.5 (the run used 0.0001)" in err and "Traceback" not in err


def test_resume_keeps_the_best_score_and_does_not_replace_best_with_a_worse_model(finished_run: Path) -> None:
    checkpoint = _progress(finished_run / "checkpoint-2")
    assert checkpoint["best_metrics"] is not None and checkpoint["best_step"] in (1, 2)
    run = _copy(finished_run, "resume-best")
    marker = run / "checkpoint-2" / PROGRESS_FILE
    progress = _progress(run / "checkpoint-2")
    progress["best_metrics"]["AP"] = 2.0  # a best no later evaluation can beat
    marker.write_text(json.dumps(progress))
    best_before = (run / "best" / "model.safetensors").read_bytes()
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "3", "--eval_steps", "1") == 0
    assert (run / "best" / "model.safetensors").read_bytes() == best_before
    assert _progress(run / "checkpoint-3")["best_metrics"]["AP"] == 2.0


def test_resume_at_the_last_step_does_not_evaluate_it_again(finished_run: Path, capsys) -> None:
    run = _copy(finished_run, "resume-same-step")
    capsys.readouterr()
    assert _train(run, "--resume_from_checkpoint", "latest") == 0
    assert "COCO bbox" not in capsys.readouterr().out


# --- damaged checkpoints, another run's folder ------------------------------------------------------------------------


def test_truncated_optimizer_in_newest_checkpoint_is_reported_and_the_previous_one_used(finished_run, capsys) -> None:
    run = _copy(finished_run, "damaged-optimizer")
    optimizer = run / "checkpoint-2" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    capsys.readouterr()
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "3") == 0
    out = capsys.readouterr().out
    assert "optimizer.bin has 100 bytes" in out and f"Resumed from {run / 'checkpoint-1'}" in out


def test_truncated_weights_behind_an_old_marker_are_reported_and_the_previous_checkpoint_used(finished_run, capsys):
    run = _copy(finished_run, "damaged-weights")
    progress = _progress(run / "checkpoint-2")
    del progress["files"]  # a marker without sizes: the load itself must notice
    (run / "checkpoint-2" / PROGRESS_FILE).write_text(json.dumps(progress))
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "3") == 0
    out = capsys.readouterr().out
    assert "checkpoint-2 cannot be resumed from" in out and f"Resumed from {run / 'checkpoint-1'}" in out


def test_damaged_checkpoint_named_explicitly_gives_a_one_line_error(finished_run: Path, capsys) -> None:
    run = _copy(finished_run, "damaged-explicit")
    optimizer = run / "checkpoint-2" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert _train(run, "--resume_from_checkpoint", str(run / "checkpoint-2"), "--max_steps", "3") == 1
    err = capsys.readouterr().err
    assert "optimizer.bin has 100 bytes" in err and "Traceback" not in err


def test_output_dir_holding_another_run_is_refused(finished_run: Path, workdir: Path, capsys) -> None:
    assert _train(finished_run, "--max_steps", "1", model=workdir / "tiny.json") == 1
    assert "already holds a training run" in capsys.readouterr().err


def test_overwrite_output_dir_never_rotates_or_resumes_the_other_runs_checkpoints(finished_run, workdir) -> None:
    run = _copy(finished_run, "overwritten")
    other = _progress(run / "checkpoint-2")["run_id"]
    common = ("--save_steps", "1", "--eval_steps", "100", "--save_total_limit", "1")
    assert _train(run, "--overwrite_output_dir", "--max_steps", "1", *common, model=workdir / "tiny.json") == 0
    assert (run / "checkpoint-1").is_dir() and (run / "checkpoint-2").is_dir()  # its own newest, and the other's
    mine = _progress(run / "checkpoint-1")["run_id"]
    assert mine != other
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "2", *common) == 0
    assert _progress(run / "checkpoint-2")["run_id"] == mine and not (run / "checkpoint-1").exists()


# --- best/ and last/ written whole; the output folder; the disk -------------------------------------------------------


def test_best_is_replaced_whole_and_a_kill_between_the_renames_keeps_the_previous_one(tmp_path: Path) -> None:
    final = tmp_path / "best"
    final.mkdir()
    (final / "config.json").write_text("old")
    tmp = temporary_sibling(final)
    (tmp / "config.json").write_text("new")
    replace_folder(tmp, final)
    assert (final / "config.json").read_text() == "new" and not tmp.exists()
    # killed after `best` was moved aside and before the new one took its place:
    (tmp_path / "best").rename(tmp_path / "best.old")
    recover_folder(final)
    assert (final / "config.json").read_text() == "new"


def test_disk_full_while_writing_last_names_the_folder_and_keeps_the_previous_last(finished_run, monkeypatch, capsys):
    run = _copy(finished_run, "disk-full")
    last_before = (run / "last" / "model.safetensors").read_bytes()

    def full_disk(model, processor, folder, **kwargs):
        (Path(folder) / "config.json").write_text("{")  # half written
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 123 vs 456")

    monkeypatch.setattr("modeling_detr_custom.training.loop.save_hub_checkpoint", full_disk)
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "3", "--eval_steps", "100") == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"Could not write {run / 'last'}" in errors[0] and "Traceback" not in err
    assert (run / "last" / "model.safetensors").read_bytes() == last_before


def test_disk_full_while_writing_a_checkpoint_names_it_and_keeps_the_previous_ones(finished_run, monkeypatch, capsys):
    run = _copy(finished_run, "disk-full-checkpoint")

    def full_disk(self, output_dir, **kwargs):
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 123 vs 456")

    monkeypatch.setattr("accelerate.Accelerator.save_state", full_disk)
    assert _train(run, "--resume_from_checkpoint", "latest", "--max_steps", "3", "--save_steps", "1") == 1
    err = capsys.readouterr().err
    assert f"Could not write {run / 'checkpoint-3'} (disk full or no permission?)" in err
    assert "Traceback" not in err and not (run / "checkpoint-3.tmp").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_too_little_free_space_is_reported_at_start(tmp_path: Path, workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        "modeling_detr_custom.training.run_state.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0)
    )
    assert _train(tmp_path / "run", "--max_steps", "1", model=workdir / "tiny.json") == 0
    assert f"warning: {tmp_path / 'run'} has 0 MiB free" in capsys.readouterr().out


def test_unwritable_output_dir_is_refused_before_training(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert _train(blocker / "run", "--max_steps", "1") == 1
    err = capsys.readouterr().err
    assert f"Cannot write to --output_dir {blocker / 'run'}" in err and "Traceback" not in err


@pytest.mark.parametrize(("damage", "message"), [("config", "config.json is damaged"), ("weights", "has no weights")])
def test_push_to_hub_refuses_a_half_written_folder(saved_models: Path, tmp_path: Path, damage: str, message) -> None:
    from modeling_detr_custom.training.hub import HubUploadError, push_folder_to_hub

    folder = tmp_path / "best"
    shutil.copytree(saved_models / "mismatched", folder)
    if damage == "config":
        (folder / "config.json").write_text("")  # what a kill during an in-place write used to leave
    else:
        (folder / "model.safetensors").unlink()
    with pytest.raises(HubUploadError, match=message):
        push_folder_to_hub(folder, "someone/model", token="not-used")


# --- arguments validated at parse time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--logging_steps", "0", "--logging_steps must be >= 1"),
        ("--save_total_limit", "0", "--save_total_limit must be >= 1"),
        ("--save_total_limit", "-1", "--save_total_limit must be >= 1"),
        ("--eval_steps", "-1", "--eval_steps must be >= 0"),
    ],
)
def test_bad_argument_values_are_refused_at_parse_time(flag: str, value: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        train_main(["--output_dir", "unused", flag, value])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_on_bad_data_value_is_a_usage_error_in_every_command(command: str, capsys) -> None:
    from modeling_detr_custom.apps.cli import main as cli_main

    argv = [command, "--on_bad_data", "ignore"] + (["--model", "unused"] if command == "evaluate" else [])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert "--on_bad_data must be 'raise' or 'skip', got 'ignore'" in capsys.readouterr().err


# --- bad data: one line naming the file, the entry and the field ------------------------------------------------------


def _coco(root: Path, content: object, raw: str | None = None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    text = raw if raw is not None else json.dumps(content)
    (root / "annotations" / "instances_train.json").write_text(text)
    return root


def _good_coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "0001.png", "width": 32, "height": 32}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _with(path: str, value: object) -> dict:
    """`_good_coco()` with one field replaced, e.g. `_with("images.0.id", "1")`."""
    content = _good_coco()
    *parents, last = path.split(".")
    target = content
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value
    return content


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([_good_coco()], "the JSON root is a list"),
        (_with("annotations", None), "'annotations' must be a list of objects, got null"),
        (_with("images", {"id": 1}), "'images' must be a list of objects"),
        (_with("annotations.0", 7), "annotations[0] must be an object, got 7"),
        (_with("images.0", "0001.png"), 'images[0] must be an object, got "0001.png"'),
        (_with("images.0.id", "1"), "images[0] (0001.png) 'id' is \"1\"; expected an integer in [0, 2**63)"),
        (_with("images.0.id", 1.5), "images[0] (0001.png) 'id' is 1.5; expected an integer"),
        (_with("images.0.id", 2**64), "images[0] (0001.png) 'id' is 18446744073709551616; expected an integer"),
        (_with("annotations.0.image_id", "1"), "annotations[0] 'image_id' is \"1\""),
        (_with("annotations.0.id", "a5"), "annotations[0] 'id' is \"a5\""),
        (_with("categories.0.id", "1"), "'categories': Category ids must be integers, got '1' (str)"),
    ],
    ids=[
        "root-is-list",
        "annotations-null",
        "images-not-list",
        "annotation-not-object",
        "image-not-object",
        "string-image-id",
        "float-image-id",
        "huge-image-id",
        "string-image-id-in-annotation",
        "string-annotation-id",
        "string-category-id",
    ],
)
def test_malformed_coco_json_names_the_file_entry_and_field(tmp_path: Path, content: object, message: str) -> None:
    from modeling_detr_custom.data import load_detection_split

    root = _coco(tmp_path / "coco", content)
    with pytest.raises(ValueError) as error:
        load_detection_split(str(root), "train")
    text = str(error.value)
    assert message in text and "instances_train.json" in text and "\n" not in text


def test_json_syntax_error_names_the_file(tmp_path: Path) -> None:
    from modeling_detr_custom.data import load_detection_split

    root = _coco(tmp_path / "coco", None, raw='{"images": [')
    with pytest.raises(ValueError, match=r"instances_train\.json is not valid JSON: Expecting value: line 1"):
        load_detection_split(str(root), "train")


@pytest.mark.parametrize(("image_ids", "shown"), [(["a7", "b8"], '"a7"'), ([1.5, 2.5], "1.5")])
def test_datasets_folder_with_string_or_float_image_ids_names_the_row(tmp_path: Path, image_ids, shown) -> None:
    import datasets
    import numpy as np
    from PIL import Image

    from modeling_detr_custom.data import load_detection_split

    rows = {
        "image_id": image_ids,
        "image": [Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8))] * 2,
        "objects": [{"bbox": [[1.0, 1.0, 5.0, 5.0]], "category": ["cat"]}] * 2,
    }
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=rf"row 0 'image_id' is {shown}; expected an integer in \[0, 2\*\*63\)"):
        load_detection_split(str(folder), "train")


def test_iscrowd_2_is_refused_naming_the_annotation_and_skipped_with_skip(tmp_path: Path) -> None:
    from PIL import Image

    from modeling_detr_custom.data import load_detection_split

    root = _coco(tmp_path / "coco", _with("annotations.0.iscrowd", 2))
    Image.new("RGB", (32, 32)).save(root / "train" / "0001.png")
    with pytest.raises(ValueError, match=r"Annotation 5 of image .*0001\.png.*iscrowd"):
        load_detection_split(str(root), "train")
    split = load_detection_split(str(root), "train", on_error="skip")
    assert split.report() and len(split.dataset) == 1  # the image stays, without the annotation


def test_empty_train_split_is_named(tmp_path: Path, workdir: Path, capsys) -> None:
    root = _coco(tmp_path / "coco", _with("images", []) | {"annotations": []})
    (root / "annotations" / "instances_val.json").write_text(json.dumps(_with("images", []) | {"annotations": []}))
    argv = ["--data", str(root), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    assert train_main(argv + ["--model", str(workdir / "tiny.json"), "--max_steps", "1"]) == 1
    err = capsys.readouterr().err
    assert f"--train_split 'train' of {root} has no images" in err and "Traceback" not in err


# --- images -----------------------------------------------------------------------------------------------------------


def test_16_bit_png_keeps_its_full_range_and_agrees_with_the_processor(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from image_processing import DetrCustomImageProcessor
    from modeling_detr_custom.data.images import open_image

    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))  # (H, W) 0 .. 65535
    path = tmp_path / "depth.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")  # 16-bit as PIL reads it

    opened = np.asarray(open_image(path))  # what training, evaluation and prediction read
    assert opened.dtype == np.uint8 and opened.shape == (32, 64, 3)
    assert opened.min() == 0 and opened.max() == 255 and len(np.unique(opened)) == 64  # not clipped white
    processor = DetrCustomImageProcessor(do_resize=False, do_normalize=False)
    direct = processor(Image.open(path))["pixel_values"][0]  # the processor given the 16-bit image itself
    via_reader = processor(open_image(path))["pixel_values"][0]
    torch.testing.assert_close(via_reader, direct, rtol=0, atol=0.5 / 255 + 1e-6)


def test_32_bit_integer_image_out_of_16_bit_range_names_the_file(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from modeling_detr_custom.data.images import open_image

    path = tmp_path / "wide.tiff"
    Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)).save(path)
    with pytest.raises(ValueError, match=r"Cannot read image .*wide.tiff.*outside \[0, 65535\]"):
        open_image(path)


# --- bad model inputs, configs and model folders ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int64", "float64"])
def test_pixel_values_of_the_wrong_dtype_are_refused_by_name(dtype: str) -> None:
    import torch

    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.testing_utils import make_pixel_inputs, make_tiny_config

    model = DetrCustomForObjectDetection(make_tiny_config()).eval()
    inputs = make_pixel_inputs()
    pixel_values = (inputs["pixel_values"] * 50).to(getattr(torch, dtype))
    with pytest.raises(TypeError, match=f"pixel_values has dtype torch.{dtype}"):
        model(pixel_values=pixel_values, pixel_mask=inputs["pixel_mask"])


def test_unknown_backbone_name_fails_at_config_validation() -> None:
    from modeling_detr_custom import DetrCustomConfig

    with pytest.raises(ValueError, match="backbone 'resnet5O' is not a timm model name"):
        DetrCustomConfig(backbone="resnet5O")


def test_vit_backbone_gives_a_named_error_instead_of_a_key_error() -> None:
    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.testing_utils import make_tiny_config

    with pytest.raises(ValueError, match=r"backbone 'vit_tiny_patch16_224' is not supported: .*Use a CNN backbone"):
        DetrCustomForObjectDetection(make_tiny_config(backbone="vit_tiny_patch16_224"))


@pytest.fixture(scope="module")
def saved_models(workdir: Path) -> Path:
    from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
    from modeling_detr_custom.testing_utils import make_tiny_config

    root = workdir / "models"
    model = DetrCustomForObjectDetection(make_tiny_config())
    for name in ("truncated", "mismatched"):
        model.save_pretrained(root / name)
        DetrCustomImageProcessor().save_pretrained(root / name)
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    config = json.loads((root / "mismatched" / "config.json").read_text())
    (root / "mismatched" / "config.json").write_text(json.dumps({**config, "d_model": 64}))
    return root


@pytest.mark.parametrize(
    ("name", "message"),
    [("truncated", "the weights cannot be read"), ("mismatched", "the weights' shapes do not match its config.json")],
)
def test_damaged_model_folder_gives_one_line_in_evaluate_and_predict(saved_models: Path, name: str, message, capsys):
    from modeling_detr_custom.apps.cli.evaluate import main as evaluate_main
    from modeling_detr_custom.apps.cli.predict import main as predict_main

    folder = saved_models / name
    assert evaluate_main(["--model", str(folder), "--data", DATA, "--split", "val"]) == 1
    assert predict_main(["--model", str(folder), str(folder / "config.json")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(f"Cannot load the model in {folder}: {message}" in line for line in errors)


@pytest.mark.parametrize(
    ("name", "message"),
    [("truncated", "the weights cannot be read"), ("mismatched", "the weights' shapes do not match its config.json")],
)
def test_damaged_model_folder_gives_one_line_through_the_auto_class(saved_models: Path, name: str, message: str):
    from transformers import AutoModelForObjectDetection

    with pytest.raises(
        ValueError, match=rf"^Cannot load the model in {re.escape(str(saved_models / name))}: {message}"
    ):
        AutoModelForObjectDetection.from_pretrained(saved_models / name)


def test_fine_tuning_from_a_checkpoint_whose_weights_do_not_fit_refuses_instead_of_reinitialising(saved_models):
    from modeling_detr_custom.data import CategoryMapping
    from modeling_detr_custom.training.models import load_model_for_training

    # the model's loading rule refuses first: backbone/transformer weights of another shape are never re-initialised
    with pytest.raises(ValueError, match=r"backbone/transformer weights do not match the checkpoint: mismatched keys"):
        load_model_for_training(str(saved_models / "mismatched"), CategoryMapping([1, 2]))


def test_fine_tuning_from_a_checkpoint_with_other_classes_reinitialises_only_the_class_head(saved_models, tmp_path):
    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.data import CategoryMapping
    from modeling_detr_custom.testing_utils import make_tiny_config
    from modeling_detr_custom.training.models import load_model_for_training

    DetrCustomForObjectDetection(make_tiny_config()).save_pretrained(tmp_path / "good")
    model, base = load_model_for_training(str(tmp_path / "good"), CategoryMapping([1, 2, 3, 4, 5, 6, 7]))
    assert base == str(tmp_path / "good") and model.class_labels_classifier.out_features == 8


# --- bad image-processor options: one line naming the option ---------------------------------------------------------


def test_an_absurd_resize_size_is_refused_at_construction_instead_of_failing_in_the_allocator() -> None:
    from modeling_detr_custom import DetrCustomImageProcessor

    with pytest.raises(ValueError, match=r"`size\['shortest_edge'\]` = 10000000 px is larger than 16384 px"):
        DetrCustomImageProcessor(size={"shortest_edge": 10_000_000, "longest_edge": 100_000_000})


def test_image_mean_none_means_the_documented_imagenet_default() -> None:
    from modeling_detr_custom import DetrCustomImageProcessor

    assert DetrCustomImageProcessor(image_mean=None).image_mean == DetrCustomImageProcessor().image_mean


@pytest.mark.parametrize("threshold", ["0.5", None])
def test_a_threshold_that_is_not_a_number_is_named(threshold: object) -> None:
    import torch

    from modeling_detr_custom import DetrCustomImageProcessor

    outputs = {"logits": torch.zeros(1, 4, 4), "pred_boxes": torch.full((1, 4, 4), 0.5)}
    with pytest.raises(TypeError, match=r"`threshold` must be a number"):
        DetrCustomImageProcessor().post_process_object_detection(outputs, threshold=threshold)


# --- evaluation and prediction do not depend on the batch size or the number of processes -----------------------------


MIXED_SIZES = [(80, 60), (60, 80), (64, 64), (100, 50), (80, 60), (50, 90), (64, 64)]  # (width, height)


@pytest.fixture(scope="module")
def mixed_size_coco(workdir: Path) -> Path:
    import numpy as np
    from PIL import Image

    root = workdir / "mixed"
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for index, (width, height) in enumerate(MIXED_SIZES, start=1):
        pixels = np.random.default_rng(index).integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "val" / f"{index}.png")
        images.append({"id": index, "file_name": f"{index}.png", "width": width, "height": height})
        annotations.append({"id": index, "image_id": index, "category_id": 1 + index % 2, "bbox": [5, 5, 30, 20]})
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return root


def _evaluate_at(root: Path, batch_size: int):
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.data import default_processor, load_detection_split
    from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator
    from modeling_detr_custom.evaluation.loop import evaluate_model
    from modeling_detr_custom.testing_utils import make_tiny_config

    split = load_detection_split(str(root), "val", processor=default_processor(64))
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(make_tiny_config(num_labels=2)).eval()
    loader = DataLoader(split.dataset, batch_size=batch_size, collate_fn=split.collate_fn)
    evaluator = CocoEvaluator(split.coco, split.mapping)
    metrics = evaluate_model(model, loader, split.processor, evaluator, split.mapping, Accelerator(cpu=True))
    return metrics, evaluator.predictions, model, split


def test_evaluation_numbers_do_not_depend_on_the_batch_size_with_mixed_image_sizes(mixed_size_coco: Path) -> None:
    import numpy as np
    import torch

    reference_metrics, reference, model, split = _evaluate_at(mixed_size_coco, 1)
    for batch_size in (2, 5):
        metrics, predictions, _, _ = _evaluate_at(mixed_size_coco, batch_size)
        assert scalar_metrics(metrics) == pytest.approx(scalar_metrics(reference_metrics), abs=1e-6)
        assert predictions.keys() == reference.keys()
        for image_id in reference:
            for key in ("scores", "boxes"):
                np.testing.assert_allclose(predictions[image_id][key], reference[image_id][key], rtol=0, atol=1e-4)
            np.testing.assert_allclose(predictions[image_id]["scores"], reference[image_id]["scores"], atol=1e-6)
    # The test can fail: run the same model on one padded batch and the small images' scores move.
    batch = split.collate_fn([split.dataset[i] for i in range(5)])
    height, width = int(batch["pixel_mask"][1, :, 0].sum()), int(batch["pixel_mask"][1, 0, :].sum())
    assert (height, width) != tuple(batch["pixel_mask"].shape[1:])  # image 1 is padded in this batch
    with torch.no_grad():
        padded = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"]).logits.softmax(-1)
        alone = model(pixel_values=batch["pixel_values"][1:2, :, :height, :width]).logits.softmax(-1)
    assert (padded[1] - alone[0]).abs().max() > 1e-4


def test_evaluation_with_two_processes_equals_one_process_on_mixed_image_sizes(mixed_size_coco, workdir) -> None:
    import os
    import subprocess
    import sys

    import numpy as np

    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.data import CategoryMapping, default_processor
    from modeling_detr_custom.testing_utils import make_tiny_config

    checkpoint = workdir / "mixed-model"
    model = DetrCustomForObjectDetection(make_tiny_config(num_labels=2))
    CategoryMapping([1, 2], ["a", "b"]).apply_to_config(model.config)
    model.save_pretrained(checkpoint)
    default_processor(64).save_pretrained(checkpoint)
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launchers = {
        1: [sys.executable],
        2: [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", "--main_process_port", "0"],
    }  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    results = {}
    for processes, batch_size in ((1, 5), (2, 2)):
        output, detections = workdir / f"mixed-{processes}.json", workdir / f"mixed-{processes}-detections.json"
        command = launchers[processes] + [script, "--model", str(checkpoint), "--data", str(mixed_size_coco)]
        command += ["--output", str(output), "--detections", str(detections)]
        command += ["--per_device_eval_batch_size", str(batch_size)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        results[processes] = json.loads(output.read_text()), json.loads(detections.read_text())
    assert scalar_metrics(results[2][0]) == pytest.approx(scalar_metrics(results[1][0]), abs=1e-6)

    def rows(detections: list[dict]) -> np.ndarray:
        table = np.array([[d["image_id"], d["category_id"], d["score"], *d["bbox"]] for d in detections])
        order = np.lexsort((table[:, 3], np.round(table[:, 2], 5), table[:, 1], table[:, 0]))
        return table[order]

    one, two = rows(results[1][1]), rows(results[2][1])
    assert one.shape == two.shape and len(np.unique(one[:, 0])) == len(MIXED_SIZES)
    np.testing.assert_array_equal(two[:, :2], one[:, :2])  # image and category of every detection
    np.testing.assert_allclose(two[:, 2], one[:, 2], rtol=0, atol=1e-6)  # scores
    np.testing.assert_allclose(two[:, 3:], one[:, 3:], rtol=0, atol=1e-3)  # boxes, in pixels


def test_predictions_do_not_depend_on_the_batch_size_with_mixed_image_sizes(saved_models: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from modeling_detr_custom import DetrCustomForObjectDetection
    from modeling_detr_custom.apps.predict import ObjectDetector
    from modeling_detr_custom.data import default_processor
    from modeling_detr_custom.testing_utils import make_tiny_config

    torch.manual_seed(0)
    detector = ObjectDetector(DetrCustomForObjectDetection(make_tiny_config()).eval(), default_processor(64), "cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in MIXED_SIZES]
    alone = [detector.detect([image], threshold=0.0)[0] for image in images]
    together = detector.detect(images, threshold=0.0)
    for single, batched in zip(alone, together):
        assert [d["label_id"] for d in batched] == [d["label_id"] for d in single]
        assert [d["score"] for d in batched] == pytest.approx([d["score"] for d in single], abs=2e-5)
