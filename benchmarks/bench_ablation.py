"""What each speed path buys: our model with one optimisation switched off at a time, against all of them on.

    python benchmarks/bench_ablation.py [--quick] [--repeats N] [--work inference,training]

Same checkpoint and inputs as items 1 and 4 of `benchmarks/run.py` (DETR-R50, batch 1 at 800x1066 for inference,
batch 2 at 800 px for a training step), 2 threads, all variants and transformers interleaved in every repeat. A
gain is the variant's time divided by the time with everything on (`> 1`: the optimisation helps); the last row
is transformers against everything on. Every variant's outputs are checked against transformers' first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_common import interleaved_seconds  # noqa: E402
from bench_models import (  # noqa: E402
    MODEL_SPECS,
    _training_step,
    build_checkpoint,
    check_inference_parity,
    load_pair,
    make_batch,
    training_labels,
)
from torch import nn  # noqa: E402

import modeling_detr_custom.model.backbone as backbone_module  # noqa: E402
import modeling_detr_custom.model.modeling_detr_custom as modeling_module  # noqa: E402
from modeling_detr_custom.model.backbone import TimmConvEncoder, unfold_frozen_batch_norms  # noqa: E402
from modeling_detr_custom.model.transformer import DetrCustomAttention  # noqa: E402

__all__ = ["VARIANTS", "ablation_table"]


@contextlib.contextmanager
def _patched(module: object, name: str, value: object) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _set_attribute(model: nn.Module, kind: type, name: str, value: object) -> nn.Module:
    for module in model.modules():
        if isinstance(module, kind):
            setattr(module, name, value)
    return model


def _unfolded(model: nn.Module) -> nn.Module:
    unfold_frozen_batch_norms(model)
    return model


def _always_flat_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.flatten(1)


# name -> (how to derive the model from ours, context manager active during its calls)
VARIANTS: dict[str, tuple[Callable[[nn.Module], nn.Module], Callable[[], contextlib.AbstractContextManager]]] = {
    "BatchNorm (and ReLU) folded into the convolutions": (_unfolded, contextlib.nullcontext),
    "ReLU inside the oneDNN convolution": (
        lambda model: model,
        partial(_patched, backbone_module, "_MKLDNN_CONVOLUTION_POINTWISE", None),
    ),
    "cached folded weights": (
        lambda model: model,
        partial(_patched, backbone_module, "derived_tensor_cache_key", lambda *args: None),
    ),
    "channels-last convolutions": (
        partial(_set_attribute, kind=TimmConvEncoder, name="channels_last", value=False),
        contextlib.nullcontext,
    ),
    "stacked q/k projection": (
        partial(_set_attribute, kind=DetrCustomAttention, name="stack_query_key", value=False),
        contextlib.nullcontext,
    ),
    "attention mask dropped when nothing is padded": (
        lambda model: model,
        partial(_patched, modeling_module, "_key_padding_mask", _always_flat_mask),
    ),
}


def _in_context(context: Callable[[], contextlib.AbstractContextManager], call: Callable) -> Callable:
    def wrapped() -> object:
        with context():
            return call()

    return wrapped


def ablation_table(work: str, quick: bool, repeats: int) -> list[tuple[str, float, float]]:
    """(variant, gain from minima, gain from medians) for `work` ("inference" or "training")."""
    spec = MODEL_SPECS["r50"]
    scale = 0.4 if quick else 1.0
    with tempfile.TemporaryDirectory(prefix="detr_ablation_") as folder:
        ours, theirs = load_pair(spec, build_checkpoint(spec, Path(folder) / "r50"))
    sizes = [(800, 1066)] if work == "inference" else [(800, 1066), (800, 1000)]
    inputs = make_batch([(round(h * scale), round(w * scale)) for h, w in sizes], seed=2)
    calls = {}
    for name, (derive, context) in {"everything on": (lambda model: model, contextlib.nullcontext), **VARIANTS}.items():
        model = derive(copy.deepcopy(ours))
        if work == "inference":
            with context():
                check_inference_parity(model, theirs, inputs, name)
            calls[name] = _in_context(context, partial(_no_grad_call, model, inputs))
        else:
            calls[name] = _in_context(context, _training_step(model.train(), inputs, training_labels(2, 91)))
    calls["transformers"] = (
        partial(_no_grad_call, theirs, inputs)
        if work == "inference"
        else _training_step(theirs.train(), inputs, training_labels(2, 91))
    )
    times = interleaved_seconds(calls, repeats)
    base_min, base_median = min(times["everything on"]), statistics.median(times["everything on"])
    return [
        (name, min(values) / base_min, statistics.median(values) / base_median)
        for name, values in times.items()
        if name != "everything on"
    ]


def _no_grad_call(model: nn.Module, inputs: dict[str, torch.Tensor]) -> object:
    with torch.no_grad():
        return model(**inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="images at 40%% size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="inference,training")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    for work in arguments.work.split(","):
        print(f"\n{work}: time with the optimisation off / time with everything on (> 1: it helps)")
        for name, gain_min, gain_median in ablation_table(work, arguments.quick, arguments.repeats):
            label = "transformers (everything off)" if name == "transformers" else f"without {name}"
            print(f"  {label:<60} {gain_min:6.2f}x (min) {gain_median:6.2f}x (median)")


if __name__ == "__main__":
    main()
