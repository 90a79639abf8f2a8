"""Export a detection checkpoint to ONNX and check onnxruntime against PyTorch (outputs within 1e-4).

python scripts/export_onnx.py outputs/detr-custom/last onnx/ --dynamic --with_postprocess
python scripts/export_onnx.py outputs/detr-custom/last onnx-fp16/ --dtype fp16 --opset 18
"""

from __future__ import annotations

import argparse
import sys

from modeling_detr_custom.apps.export_onnx import OnnxExportArguments, ParityError, export_onnx


def parse_args(argv: list[str] | None = None) -> OnnxExportArguments:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="Checkpoint folder (config.json, weights, preprocessor_config.json).")
    parser.add_argument("out_dir", help="Folder for model.onnx, config.json and preprocessor_config.json.")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
    parser.add_argument("--dynamic", action="store_true", help="Dynamic batch, height and width.")
    parser.add_argument(
        "--with_postprocess",
        "--with-postprocess",
        action="store_true",
        help="Also take target_sizes (B, 2) and output scores, labels and xyxy boxes in those pixels.",
    )
    parser.add_argument("--dtype", default="fp32", help="fp32 (default) or fp16 weights and pixel_values.")
    parser.add_argument("--height", type=int, default=0, help="Export example height (default: the processor's).")
    parser.add_argument("--width", type=int, default=0, help="Export example width (default: the processor's).")
    parser.add_argument("--exporter", default="dynamo", help="'dynamo' (default, torch.export) or 'torchscript'.")
    namespace = parser.parse_args(argv)
    try:
        return OnnxExportArguments(**vars(namespace))
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        export_onnx(args)
    except ImportError as err:
        print(f"error: {err}; install the deploy extra: pip install -e '.[deploy]'", file=sys.stderr)
        return 1
    except (OSError, ValueError, ParityError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
