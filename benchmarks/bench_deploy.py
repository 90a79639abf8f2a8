"""Deploy benchmarks, ratios measured side by side in one run: onnxruntime vs our eager PyTorch (equal outputs
within 1e-4) and the batched object-detection pipeline on mixed sizes vs one image at a time.

    python benchmarks/bench_deploy.py [--quick] [--r50] [--output benchmarks/results_deploy.json]

Random weights: speed does not depend on them. `--r50` adds DETR-R50 at 800x1066 (slow to export and run on a
small CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import interleaved_seconds, machine_description, markdown_table, row_from_seconds
from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.apps.export_onnx import OnnxDetector, check_onnx_parity, export_to_onnx, parity_inputs
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
    parser.add_argument("--r50", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    demo = DetrCustomConfig(**MODEL_PRESETS["detr-tiny"])
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        rows.append(onnxruntime_row("demo model (detr-tiny)", demo, 128, 128, repeats * 5, folder))
        if args.r50:
            r50 = DetrCustomConfig(backbone="resnet50", use_pretrained_backbone=False)
            rows.append(onnxruntime_row("DETR-R50", r50, 800, 1066, repeats, folder))
        rows.append(pipeline_row(demo, repeats, folder))
    print(markdown_table(rows))
    if args.output:
        Path(args.output).write_text(
            json.dumps({"machine": machine_description(), "rows": [row.as_dict() for row in rows]}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
