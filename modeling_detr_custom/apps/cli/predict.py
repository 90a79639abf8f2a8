"""Detect objects in images with a trained checkpoint: a JSON list per image, and optionally drawn pictures.

python scripts/predict.py --model outputs/detr-custom/last photos/ extra.jpg "shots/**/*.png"
python scripts/predict.py --model my-name/detr-shapes photos/ --output detections.json --draw drawn/ --top_k 10
python scripts/predict.py --model onnx/ --backend onnxruntime photos/   (onnx/ written by scripts/export_onnx.py)
python scripts/predict.py --model my-detr-panoptic photos/ --task panoptic --draw drawn/   (segments, masks drawn)
"""

from __future__ import annotations

import argparse
import sys

from modeling_detr_custom.apps.predict import TASK_HELP, PredictArguments, run_predict


def parse_args(argv: list[str] | None = None) -> PredictArguments:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Checkpoint folder or Hub id.")
    parser.add_argument(
        "inputs", nargs="+", help="Image or video files (mp4, avi, gif, ...), folders of them, or globs ('**')."
    )
    parser.add_argument("--output", help="Write the JSON list here (default: standard output).")
    parser.add_argument(
        "--draw", metavar="OUT_DIR", help="Write a PNG per image (MP4 per video) with the detections drawn here."
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="Keep detections scoring above this (0.5).")
    parser.add_argument("--top_k", "--top-k", type=int, default=None, help="Keep at most K detections per image.")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8, help="Images per forward pass (8).")
    parser.add_argument(
        "--every_n_frames", "--every-n-frames", type=int, default=1, help="In videos, every n-th frame (1)."
    )
    parser.add_argument(
        "--draw_scale", "--draw-scale", type=float, default=1.0, help="Enlarge pictures before drawing (1.0)."
    )
    parser.add_argument("--no_labels", "--no-labels", action="store_true", help="Draw boxes without tags.")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (or 'cuda:N'); default cpu.")
    parser.add_argument(
        "--backend",
        default="torch",
        help="'torch' (default) or 'onnxruntime': runs the folder's model.onnx (scripts/export_onnx.py output).",
    )
    parser.add_argument("--dtype", default="fp32", help="'fp32' (default) or 'bf16' (bfloat16 autocast, torch).")
    parser.add_argument("--task", default=None, help=TASK_HELP)
    namespace = parser.parse_args(argv)
    try:
        return PredictArguments(**vars(namespace))
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_predict(args)
    except (OSError, ValueError) as err:  # a checkpoint that cannot be loaded, an unusable device
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
