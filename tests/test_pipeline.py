"""`pipeline("object-detection")` and the Auto classes on saved checkpoints, in fresh processes.

Each child process runs with the package imported, or with only the files saved next to the weights
(`trust_remote_code=True`, `modeling_detr_custom` made unimportable, cwd a temporary folder), and with
`HF_HOME` pointing at a Hugging Face cache laid out the way `huggingface_hub` stores downloads.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
from tests.conftest import make_tiny_config, run_isolated_python

ID2LABEL = {0: "rectangle", 1: "ellipse", 2: "triangle"}
REPO_ID = "owner/name"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE_SIZES = [(64, 96), (64, 96), (64, 96)]  # (height, width)
MIXED_SIZES = [(64, 96), (90, 64), (70, 70)]  # batched by padding (see `test_pipeline_batches_mixed_sizes`)

CHILD_SCRIPT = """
import json
import sys
from pathlib import Path

mode, checkpoint, output = sys.argv[1:4]
paths = sys.argv[4:]
if mode == "remote":
    for package in ("modeling_detr_custom", "image_processing"):
        sys.modules[package] = None  # importing the package now raises ImportError
    try:
        import modeling_detr_custom  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_detr_custom is importable in the remote-code process")
else:
    import modeling_detr_custom  # noqa: F401

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline

def attempt(call):
    # The call's result, or its error as a string: one failing feature must not hide the others' results.
    try:
        return call()
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}


remote = {"trust_remote_code": True} if mode == "remote" else {}
detector = pipeline("object-detection", model=checkpoint, **remote)
images = [Image.open(path) for path in paths]
mixed = [str(path) for path in sorted(Path(paths[0]).parent.glob("mixed*.png"))]
scores = [d["score"] for d in detector(images[0], threshold=0.0)]
ranked = sorted(scores)
cut = (ranked[len(ranked) // 2] + ranked[len(ranked) // 2 - 1]) / 2  # between two scores, away from both
results = {
    "modules": [type(detector.model).__module__, type(detector.image_processor).__module__],
    "pil": attempt(lambda: detector(images[0], threshold=0.0)),
    "path": attempt(lambda: detector(paths[0], threshold=0.0)),
    "one_by_one": attempt(lambda: [detector(image, threshold=0.0) for image in images]),
    "batched": attempt(lambda: detector(images, threshold=0.0, batch_size=2)),
    "batched_paths": attempt(lambda: detector(paths, threshold=0.0, batch_size=3)),
    "batched_mixed": attempt(lambda: detector(mixed, threshold=0.0, batch_size=2)),
    "cut": cut,
    "above_cut": attempt(lambda: detector(images[0], threshold=cut)),
    "default_threshold": attempt(lambda: detector(images[0])),
}

# The same checkpoint from the local Hugging Face cache, by repository id.
model = AutoModelForObjectDetection.from_pretrained("REPO_ID", **remote).eval()
processor = AutoImageProcessor.from_pretrained("REPO_ID", **remote)
inputs = processor(images=images, return_tensors="pt")
with torch.no_grad():
    outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
results["hub_modules"] = [type(model).__module__, type(processor).__module__]
results["hub_logits"] = outputs.logits.tolist()
results["hub_pred_boxes"] = outputs.pred_boxes.tolist()
with open(output, "w") as f:
    json.dump(results, f)
""".replace("REPO_ID", REPO_ID)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DetrCustomForObjectDetection, Path]:
    """A tiny random model + processor saved as a checkpoint folder, and a HF cache holding it as owner/name."""
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    config = make_tiny_config(id2label=ID2LABEL, label2id={name: i for i, name in ID2LABEL.items()})
    model = DetrCustomForObjectDetection(config).eval()
    processor = DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    folder = root / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # The Hub's cache layout (huggingface_hub `hf_hub_download`): offline, `refs/main` names the snapshot.
    repo_cache = root / "hf_home" / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(folder, repo_cache / "snapshots" / COMMIT)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(COMMIT)
    return folder, model, root


def _images(root: Path, sizes: list[tuple[int, int]] = IMAGE_SIZES, name: str = "image") -> list[Path]:
    generator = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate(sizes):
        path = root / f"{name}{index}.png"
        Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _run_child(mode: str, folder: Path, root: Path, paths: list[Path], tmp_path: Path) -> dict:
    output = tmp_path / f"{mode}.json"
    args = [mode, folder, output, *paths]
    result = run_isolated_python(CHILD_SCRIPT, args, tmp_path, without_the_package=False, hf_home=root / "hf_home")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def results(checkpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder, _, root = checkpoint
    paths = _images(root)
    _images(root, MIXED_SIZES, "mixed")
    return {mode: _run_child(mode, folder, root, paths, tmp_path_factory.mktemp(mode)) for mode in ("local", "remote")}


def _reference(
    model: DetrCustomForObjectDetection, root: Path, paths: list[Path] | None = None, batch_size: int = 1
) -> list[list[dict]]:
    """What the pipeline should return for each image, computed with the model and processor directly on padded
    batches of `batch_size` consecutive images."""
    processor = DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    expected = []
    paths = _images(root) if paths is None else paths
    for start in range(0, len(paths), batch_size):
        images = [Image.open(path) for path in paths[start : start + batch_size]]
        inputs = processor(images=images, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        sizes = [(image.height, image.width) for image in images]
        for result in processor.post_process_object_detection(outputs, 0.0, sizes):
            expected.append([
                {"score": score, "label": ID2LABEL[label], "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box))}
                for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(),
                                             result["boxes"].int().tolist())
            ])  # fmt: skip
    return expected


def _assert_same(actual: list | dict, expected: list) -> None:
    assert not isinstance(actual, dict), actual  # the child process's error
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        if isinstance(want, list):
            _assert_same(got, want)
            continue
        assert set(got) == {"score", "label", "box"} and set(got["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert got["label"] == want["label"]
        # Integer pixels: a last-bit difference between batched and single runs may move a corner across one.
        assert all(abs(got["box"][key] - want["box"][key]) <= 1 for key in want["box"]), (got, want)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_pipeline_returns_labelled_pixel_boxes_for_pil_images_and_paths(results, checkpoint, mode) -> None:
    _, model, root = checkpoint
    result = results[mode]
    expected = _reference(model, root)
    assert len(expected[0]) == model.config.num_queries  # threshold 0 keeps every query
    _assert_same(result["pil"], expected[0])
    _assert_same(result["path"], expected[0])
    _assert_same(result["one_by_one"], expected)
    for detection in result["pil"]:
        assert all(isinstance(v, int) for v in detection["box"].values())
        assert 0 <= detection["box"]["xmin"] <= detection["box"]["xmax"] <= IMAGE_SIZES[0][1]


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_pipeline_batches_and_thresholds(results, checkpoint, mode) -> None:
    _, model, root = checkpoint
    result = results[mode]
    expected = _reference(model, root)
    _assert_same(result["batched"], expected)
    _assert_same(result["batched_paths"], expected)
    above = [d for d in expected[0] if d["score"] > result["cut"]]
    assert 0 < len(above) < len(expected[0])
    _assert_same(result["above_cut"], above)
    _assert_same(result["default_threshold"], [d for d in expected[0] if d["score"] > 0.5])


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_pipeline_batches_mixed_sizes_by_padding_with_a_pixel_mask(results, checkpoint, mode) -> None:
    # transformers' collate concatenates `pixel_values` ("Sizes of tensors must match" on mixed sizes); this
    # processor's batches are padded bottom/right with a pixel_mask, as the model's padded batch of the same images.
    _, model, root = checkpoint
    mixed = sorted(root.glob("mixed*.png"))
    assert len({Image.open(path).size for path in mixed}) == len(MIXED_SIZES)
    _assert_same(results[mode]["batched_mixed"], _reference(model, root, mixed, batch_size=2))


def test_remote_code_process_used_the_saved_files_and_the_local_one_the_package(results) -> None:
    assert results["local"]["modules"] == [
        "modeling_detr_custom.model.modeling_detr_custom",
        "image_processing.image_processing_detr_custom",
    ]
    assert all(module.startswith("transformers_modules.") for module in results["remote"]["modules"])
    assert results["local"]["hub_modules"] == results["local"]["modules"]
    assert all(module.startswith("transformers_modules.") for module in results["remote"]["hub_modules"])


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_auto_classes_load_owner_name_from_the_local_hub_cache(results, checkpoint, mode) -> None:
    _, model, root = checkpoint
    processor = DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    inputs = processor(images=[Image.open(path) for path in _images(root)], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs)
    torch.testing.assert_close(torch.tensor(results[mode]["hub_logits"]), expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(results[mode]["hub_pred_boxes"]), expected.pred_boxes, rtol=0, atol=1e-6)
