"""Deploy benchmarks, ratios measured side by side in one run: onnxruntime vs our eager PyTorch (equal outputs
within 1e-4) and the batched object-detection pipeline on mixed sizes vs one image at a time.

    python benchmarks/bench_deploy.py [--quick] [--r50] [--roofline] [--output benchmarks/results_deploy.json]

Random weights: speed does not depend on them. `--r50` adds DETR-R50 at 800x1066 (slow to export and run on a
small CPU): onnxruntime vs eager, and bf16 autocast vs fp32 eager (target >= 2x, with the max logit difference).
`--roofline` measures this machine's fp32 and bf16 matmul peaks and how close the ResNet-50 backbone and the whole
DETR-R50 come to them (FLOPs counted by `torch.utils.flop_counter`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import interleaved_seconds, machine_description, markdown_table, row_from_seconds
from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.apps.export_onnx import OnnxDetector, check_onnx_parity, export_to_onnx, parity_inputs
from modeling_detr_custom.apps.predict import store_matmul_weights_in
from modeling_detr_custom.training.models import MODEL_PRESETS


def _ort_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    # Without this, onnxruntime's idle threads spin between runs and take the cores from the interleaved PyTorch
    # calls (measured: eager 0.28 s/image instead of ~0.02 at 128x128).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_row(name: str, config: DetrCustomConfig, height: int, width: int, repeats: int, folder: Path):
    torch.manual_seed(0)
    detector = OnnxDetector(DetrCustomForObjectDetection(config).eval())
    inputs = parity_inputs(height, width, dynamic=True, with_postprocess=False)
    path = export_to_onnx(detector, inputs[-1], folder / f"{name}.onnx", dynamic=True, dynamo=True)
    worst = check_onnx_parity(path, detector, inputs, tolerance=1e-4)
    session = _ort_session(path)
    pixel_values, pixel_mask = inputs[0]
    feed = {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()}

    def eager() -> None:
        with torch.inference_mode():
            detector.model(pixel_values=pixel_values, pixel_mask=pixel_mask)

    times = interleaved_seconds({"ours": eager, "ort": lambda: session.run(["logits", "pred_boxes"], feed)}, repeats)
    return row_from_seconds(
        "deploy", f"onnxruntime vs eager, {name}, batch 1, {height}x{width}", times["ort"], times["ours"],
        "s/image", reference="ours eager", note=f"max |diff| ORT vs PyTorch over 3 inputs {worst:.1e}",
    )  # fmt: skip


def bf16_row(config: DetrCustomConfig, height: int, width: int, repeats: int):
    """Our model under bf16 autocast (what `predict.py --dtype bf16` runs) vs the same model in fp32, batch 1."""
    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(config).eval()
    bf16_model = store_matmul_weights_in(copy.deepcopy(model), torch.bfloat16)  # as ObjectDetector(dtype="bf16")
    pixel_values = torch.randn(1, 3, height, width)
    pixel_mask = torch.ones(1, height, width, dtype=torch.int64)

    def run(bf16: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return (bf16_model if bf16 else model)(pixel_values=pixel_values, pixel_mask=pixel_mask)

    fp32, bf16 = run(False), run(True)
    logit_difference = (bf16.logits.float() - fp32.logits).abs().max().item()
    box_difference = (bf16.pred_boxes.float() - fp32.pred_boxes).abs().max().item()
    times = interleaved_seconds({"bf16": lambda: run(True), "fp32": lambda: run(False)}, repeats)
    return row_from_seconds(
        "deploy", f"bf16 autocast vs fp32, DETR-R50, batch 1, {height}x{width}", times["bf16"], times["fp32"],
        "s/image", target=2.0, reference="ours fp32 eager",
        note=f"max |logits bf16 - fp32| {logit_difference:.3f}, max |boxes| {box_difference:.4f}",
    )  # fmt: skip


def roofline(repeats: int) -> list[dict[str, object]]:
    """Achieved GFLOP/s of the ResNet-50 backbone and of DETR-R50 (800x1066, batch 1) vs this machine's matmul peak.

    The 4096^3 matmuls that define the peak are timed interleaved with the model calls (fp32 and bf16 autocast),
    so load from other processes lowers peak and achieved alike and the fraction of peak stays meaningful.
    """
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = DetrCustomForObjectDetection(DetrCustomConfig(backbone="resnet50", use_pretrained_backbone=False)).eval()
    pixel_values = torch.randn(1, 3, 800, 1066)
    pixel_mask = torch.ones(1, 800, 1066, dtype=torch.int64)
    parts = {
        "ResNet-50 backbone": lambda: model.model.backbone(pixel_values, pixel_mask),
        "DETR-R50 (whole model)": lambda: model(pixel_values=pixel_values, pixel_mask=pixel_mask),
    }
    gflop = {}
    for name, part in parts.items():
        counter = FlopCounterMode(display=False)
        # Counted on the plain ops (the export path): the counter does not see the fused oneDNN convolution.
        with torch.inference_mode(), counter, mock.patch(f"{_FUSED}.is_exporting", return_value=True):
            part()
        gflop[name] = counter.get_total_flops() / 1e9
    matrices = {dtype: torch.randn(2, 4096, 4096).to(torch_dtype) for dtype, torch_dtype in _DTYPES.items()}
    calls = {("matmul", dtype): (lambda m=m: m[0] @ m[1]) for dtype, m in matrices.items()}
    for name, part in parts.items():
        for dtype in _DTYPES:
            calls[(name, dtype)] = _autocast_call(part, dtype == "bf16")
    seconds = {key: min(times) for key, times in interleaved_seconds(calls, repeats).items()}
    rows = []
    for name in parts:
        for dtype in _DTYPES:
            peak = 2 * 4096**3 / seconds[("matmul", dtype)] / 1e9
            achieved = gflop[name] / seconds[(name, dtype)]
            rows.append(
                {"part": name, "dtype": dtype, "gflop": gflop[name], "seconds": seconds[(name, dtype)],
                 "gflops_achieved": achieved, "gflops_peak": peak, "fraction_of_peak": achieved / peak}
            )  # fmt: skip
    return rows


_FUSED = "modeling_detr_custom.model.fused_conv_bn"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _autocast_call(part, bf16: bool):
    def call() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            part()

    return call


def roofline_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| part | dtype | GFLOP | s/image (best) | achieved GFLOP/s | matmul peak GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['part']} | {row['dtype']} | {row['gflop']:.0f} | {row['seconds']:.3f} | "
            f"{row['gflops_achieved']:.0f} | {row['gflops_peak']:.0f} | {row['fraction_of_peak']:.0%} |"
        )
    return "\n".join(lines)


def pipeline_row(config: DetrCustomConfig, repeats: int, folder: Path):
    from PIL import Image
    from transformers import pipeline

    torch.manual_seed(0)
    DetrCustomForObjectDetection(config).save_pretrained(folder / "demo")
    DetrCustomImageProcessor(size={"shortest_edge": 128, "longest_edge": 213}).save_pretrained(folder / "demo")
    generator = np.random.default_rng(0)
    sizes = [(int(generator.integers(96, 200)), int(generator.integers(96, 200))) for _ in range(16)]
    images = [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    detector = pipeline("object-detection", model=str(folder / "demo"))
    single = [detector(image, threshold=0.0) for image in images]
    batched = detector(images, batch_size=4, threshold=0.0)
    same_labels = sum(
        [d["label"] for d in a] == [d["label"] for d in b] for a, b in zip(single, batched)
    )  # fmt: skip
    score_difference = max(abs(x["score"] - y["score"]) for a, b in zip(single, batched) for x, y in zip(a, b))
    times = interleaved_seconds(
        {
            "one": lambda: [detector(image, threshold=0.5) for image in images],
            "batched": lambda: detector(images, batch_size=4, threshold=0.5),
        },
        repeats,
    )
    return row_from_seconds(
        "deploy", "pipeline batch 4 vs one by one, demo model, 16 mixed sizes 96-200 px", times["batched"],
        times["one"], "s/image", per=16, reference="pipeline one by one",
        note=f"same label order {same_labels}/16 images; max |score diff| from padding {score_difference:.3f}",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--r50", action="store_true", help="Add DETR-R50 at 800x1066: onnxruntime and bf16 rows.")
    parser.add_argument("--roofline", action="store_true", help="Add the matmul-peak roofline table.")
    parser.add_argument("--skip_demo", action="store_true", help="Skip the demo-model and pipeline rows.")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    demo = DetrCustomConfig(**MODEL_PRESETS["detr-tiny"])
    rows, roofline_rows = [], []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        if not args.skip_demo:
            rows.append(onnxruntime_row("demo model (detr-tiny)", demo, 128, 128, repeats * 5, folder))
        if args.r50:
            r50 = DetrCustomConfig(backbone="resnet50", use_pretrained_backbone=False)
            rows.append(onnxruntime_row("DETR-R50", r50, 800, 1066, repeats, folder))
            rows.append(bf16_row(r50, 800, 1066, repeats))
        if not args.skip_demo:
            rows.append(pipeline_row(demo, repeats, folder))
    if args.roofline:
        roofline_rows = roofline(repeats)
    print(markdown_table(rows))
    if roofline_rows:
        print(roofline_table(roofline_rows))
    if args.output:
        content = {"machine": machine_description(), "rows": [row.as_dict() for row in rows], "roofline": roofline_rows}
        Path(args.output).write_text(json.dumps(content, indent=2) + "\n")


if __name__ == "__main__":
    main()
