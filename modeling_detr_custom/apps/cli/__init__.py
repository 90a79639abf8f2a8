"""The command-line doors of the apps: `detr-custom <command> ...` (installed) or `python scripts/<command>.py ...`.

Each module here parses its arguments into a dataclass and calls package functions; `main(argv) -> exit code`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["COMMANDS", "main", "parse_arguments"]

# command -> (module in this package, one-line description)
COMMANDS = {
    "train": ("train", "train with Accelerate (one process, several GPUs, or CPU processes)"),
    "train-trainer": ("train_trainer", "train with transformers' Trainer (same data, model and evaluation)"),
    "evaluate": ("evaluate", "COCO bbox evaluation (pycocotools) of a checkpoint on a data set split"),
    "inspect-data": ("inspect_data", "data set health check: counts per class and split, box sizes, bad annotations"),
    "predict": ("predict", "detect objects in images: JSON per image, optionally drawn pictures"),
    "export-onnx": ("export_onnx", "export a checkpoint to ONNX, checked against PyTorch with onnxruntime"),
    "push-to-hub": ("push_to_hub", "upload a checkpoint folder to the Hugging Face Hub"),
    "convert-original": ("convert_original_checkpoint", "convert a facebookresearch/detr .pth checkpoint"),
    "demo": ("demo", "train the small DETR on synthetic shapes on the CPU, evaluate, draw (make demo)"),
}


def parse_arguments(parser: Any, argv: list[str] | None) -> tuple[Any, ...]:
    """The dataclasses of an `HfArgumentParser`; a value their `__post_init__` refuses becomes argparse's usage
    error (the message and exit code 2), never a traceback."""
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except ValueError as err:
        parser.error(str(err))


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: detr-custom <command> [options]   (detr-custom <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`detr-custom <command> ...`: runs the command's `main` with the remaining arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"detr-custom: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][0]}")
    program, sys.argv[0] = sys.argv[0], f"detr-custom {argv[0]}"  # argparse names the program after argv[0]
    try:
        return module.main(argv[1:])
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    sys.exit(main())
