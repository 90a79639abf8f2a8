"""Shared fixtures over `modeling_detr_custom.testing_utils` (tiny configs, padded inputs, labels), offline."""

import os

# Before transformers/huggingface_hub are imported: tests must never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from modeling_detr_custom import DetrCustomConfig  # noqa: E402
from modeling_detr_custom.testing_utils import (  # noqa: E402
    TINY_CONFIG,
    TINY_TRAINING_CONFIG,
    make_labels,
    make_pixel_inputs,
    make_tiny_config,
)

__all__ = [
    "TINY_CONFIG",
    "TINY_TRAINING_CONFIG",
    "make_labels",
    "make_pixel_inputs",
    "make_tiny_config",
    "rewrite_weights",
    "run_isolated_python",
    "scalar_metrics",
]

_BLOCK_THE_PACKAGES = """
import sys
for _package in ("modeling_detr_custom", "image_processing"):
    sys.modules[_package] = None  # importing the package now raises ImportError, as where it is not installed
"""


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The COCO and per-class numbers of a metrics dict or JSON file as flat scalars (`per_class/<name>/AP`), for
    `pytest.approx` (which does not compare nested dicts); the threshold diagnostics of `evaluate.py` left out."""
    from modeling_detr_custom.evaluation.coco_evaluator import metrics_for_trackers

    return metrics_for_trackers({key: value for key, value in metrics.items() if key != "at_score_threshold"})


def rewrite_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    """Loads `folder/model.safetensors`, lets `edit` change the state dict in place, and writes it back."""
    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def run_isolated_python(
    script: str, args: Sequence[object], cwd: Path, *, without_the_package: bool = True, hf_home: Path | None = None
) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh `python -I` with a minimal offline environment (own HOME, HF_HOME and modules cache
    under `cwd`, one thread); with `without_the_package`, `modeling_detr_custom` and `image_processing` cannot be
    imported, as on a machine where only a saved checkpoint folder exists."""
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "HF_HOME": str(hf_home or cwd / "hf_home"),
        "HF_MODULES_CACHE": str(cwd / "modules"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    code = (_BLOCK_THE_PACKAGES if without_the_package else "") + script
    return subprocess.run(
        [sys.executable, "-I", "-c", code, *map(str, args)],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


# Test tensors are tiny: a second intra-op thread only adds synchronisation, which costs 10-30x when the cores are
# shared with other processes.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> Callable[..., DetrCustomConfig]:
    """Factory: `tiny_config(**overrides)` -> `DetrCustomConfig` (see `make_tiny_config`)."""
    return make_tiny_config


@pytest.fixture
def pixel_inputs() -> dict[str, torch.Tensor]:
    """`pixel_values` (2, 3, 64, 96) and `pixel_mask` (2, 64, 96): image 0 unpadded, image 1 padded."""
    return make_pixel_inputs()


@pytest.fixture
def detection_labels() -> list[dict[str, torch.Tensor]]:
    """Labels for `pixel_inputs`: three boxes on image 0, none on image 1."""
    return make_labels()


def scripted_scores(
    monkeypatch: pytest.MonkeyPatch, model_scores: Sequence[dict], ema_scores: Sequence[dict] = ()
) -> Callable[[], dict[str, float]]:
    """A scorer that returns the next of `model_scores`, or of `ema_scores` while an EMA is applied to a model
    (`ModelEma.applied_to`); every COCO metric not listed is 0. Tests patch an evaluation with it, so that what
    they check is the rule applied to the scores (which model becomes best/, when training stops)."""
    from contextlib import contextmanager

    from modeling_detr_custom.evaluation.coco_evaluator import METRIC_NAMES
    from modeling_detr_custom.training.ema import ModelEma

    queues = {"model": list(model_scores), "ema": list(ema_scores)}
    applied = {"ema": False}
    original = ModelEma.applied_to.__wrapped__

    @contextmanager
    def applied_to(self, model):
        applied["ema"] = True
        try:
            yield from original(self, model)
        finally:
            applied["ema"] = False

    def next_scores() -> dict[str, float]:
        scores = queues["ema" if applied["ema"] else "model"].pop(0)
        return {name: float(scores.get(name, 0.0)) for name in METRIC_NAMES}

    monkeypatch.setattr(ModelEma, "applied_to", applied_to)
    return next_scores
