"""ONNX export of a detection checkpoint, checked against PyTorch with onnxruntime (behind `scripts/export_onnx.py`).

    export_onnx(OnnxExportArguments(checkpoint="outputs/detr-custom/last", out_dir="onnx/", dynamic=True))

Writes `OUT_DIR/model.onnx` with inputs `pixel_values` `(B, 3, H, W)` float and `pixel_mask` `(B, H, W)` int64
(1 = real pixel) and outputs `logits` `(B, Q, C + 1)` and `pred_boxes` `(B, Q, 4)` (normalised cxcywh). With
`with_postprocess`, a third input `target_sizes` `(B, 2)` int64 `(height, width)` and three more outputs: `scores`
`(B, Q)`, `labels` `(B, Q)` int64 and `boxes` `(B, Q, 4)` xyxy in those pixels: the numbers of
`post_process_object_detection` before its threshold. The checkpoint's `config.json` and `preprocessor_config.json`
are copied beside it. After export, onnxruntime and PyTorch run three inputs (with `dynamic`: three sizes, one a
padded batch of two; without: the export size, one padded) and any output differing by more than `tolerance`
raises `ParityError`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from modeling_detr_custom.model.modeling_detr_custom import DetrCustomForObjectDetection

__all__ = [
    "OnnxDetector",
    "OnnxExportArguments",
    "ParityError",
    "check_onnx_parity",
    "export_onnx",
    "export_to_onnx",
    "onnx_input_names",
    "onnx_output_names",
    "parity_inputs",
]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# fp16 graphs are compared with the fp32 PyTorch model: half precision through a ResNet and six attention layers
# moves logits by ~1e-2, so the fp16 check is looser (the fp32 check is the 1e-4).
_FP16_TOLERANCE = 5e-2


class ParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


class OnnxDetector(nn.Module):
    """The detection model as a graph of tensors in, tensors out (what exporters and `torch.jit.trace` take).

    Args:
        model: A `DetrCustomForObjectDetection` in eval mode.
        with_postprocess: Also take `target_sizes` and return `scores`, `labels` and `boxes` (xyxy pixels).
    """

    def __init__(self, model: nn.Module, with_postprocess: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_postprocess = with_postprocess
        self.eval()  # exporters restore the wrapper's mode on everything below it afterwards

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor, target_sizes: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask, return_dict=True)
        logits, pred_boxes = outputs.logits, outputs.pred_boxes
        if not self.with_postprocess:
            return logits, pred_boxes
        # post_process_object_detection without its threshold (a consumer filters `scores > threshold`)
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)  # (B, Q)
        heights, widths = target_sizes.float().unbind(1)  # (B,)
        scale = torch.stack([widths, heights, widths, heights], dim=1)[:, None, :]  # (B, 1, 4)
        boxes = box_convert(pred_boxes.float(), "cxcywh", "xyxy") * scale
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        return logits, pred_boxes, scores, labels, boxes


def onnx_input_names(with_postprocess: bool) -> list[str]:
    return ["pixel_values", "pixel_mask", *(["target_sizes"] if with_postprocess else [])]


def onnx_output_names(with_postprocess: bool) -> list[str]:
    return ["logits", "pred_boxes", *(["scores", "labels", "boxes"] if with_postprocess else [])]


def parity_inputs(
    height: int, width: int, dynamic: bool, with_postprocess: bool, dtype: torch.dtype = torch.float32, seed: int = 0
) -> list[tuple[Tensor, ...]]:
    """Three inputs for the parity check: with `dynamic`, one image at the export size, one at another size and a
    padded batch of two at a third; without, three batches of two at the export size (the last one padded)."""
    generator = torch.Generator().manual_seed(seed)
    if dynamic:
        shapes = [(1, height, width), (1, height + 32, max(width - 32, 64)), (2, max(height - 16, 64), width + 48)]
    else:
        shapes = [(2, height, width)] * 3  # a static graph takes the export's batch size only
    inputs = []
    for batch_size, h, w in shapes:
        pixel_values = torch.randn(batch_size, 3, h, w, generator=generator)
        pixel_mask = torch.ones(batch_size, h, w, dtype=torch.int64)
        sizes = [(h, w)] * batch_size
        if batch_size > 1:  # the second image is smaller, padded bottom/right with zeros
            sizes[1] = (h * 3 // 4, w * 2 // 3)
            pixel_mask[1] = 0
            pixel_mask[1, : sizes[1][0], : sizes[1][1]] = 1
            pixel_values[1] *= pixel_mask[1]
        example = (pixel_values.to(dtype), pixel_mask)
        if with_postprocess:
            example += (torch.tensor(sizes, dtype=torch.int64) * 2,)  # e.g. the original images, twice as large
        inputs.append(example)
    return inputs


def export_to_onnx(
    detector: OnnxDetector,
    example: tuple[Tensor, ...],
    path: Path,
    opset: int | None = None,
    dynamic: bool = False,
    dynamo: bool = True,
) -> Path:
    """Writes `detector` as ONNX to `path` (`torch.onnx.export`, the dynamo exporter by default or the TorchScript
    exporter with `dynamo=False`), with batch, height and width dynamic if `dynamic`.

    With `dynamic`, `example` must have a batch of at least 2: torch.export specialises a size-1 dimension to the
    constant 1.
    """
    with_postprocess = detector.with_postprocess
    input_names, output_names = onnx_input_names(with_postprocess), onnx_output_names(with_postprocess)
    kwargs: dict[str, Any] = {"input_names": input_names, "output_names": output_names}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic and dynamo:
        batch, height, width = (torch.export.Dim.DYNAMIC,) * 3
        shapes: dict[str, Any] = {
            "pixel_values": {0: batch, 2: height, 3: width},
            "pixel_mask": {0: batch, 1: height, 2: width},
        }
        if with_postprocess:
            shapes["target_sizes"] = {0: batch}
        kwargs["dynamic_shapes"] = shapes
    elif dynamic:
        axes = {
            "pixel_values": {0: "batch", 2: "height", 3: "width"},
            "pixel_mask": {0: "batch", 1: "height", 2: "width"},
        }
        if with_postprocess:
            axes["target_sizes"] = {0: "batch"}
        axes.update({name: {0: "batch"} for name in output_names})
        kwargs["dynamic_axes"] = axes
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(detector, example, dynamo=True, external_data=False, **kwargs)
            program.save(str(path))
        else:
            torch.onnx.export(detector, example, str(path), dynamo=False, **kwargs)
    return path


def check_onnx_parity(
    path: Path,
    detector: nn.Module,
    inputs: Sequence[tuple[Tensor, ...]],
    tolerance: float = 1e-4,
    reference_dtype: torch.dtype = torch.float32,
) -> float:
    """Runs onnxruntime and `detector` (PyTorch) on each input; returns the largest difference over all outputs.

    Raises:
        ParityError: An output differs by more than `tolerance` (the message names the input and the output), or
            the shapes differ.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_names = [node.name for node in session.get_inputs()]
    output_names = [node.name for node in session.get_outputs()]
    worst = 0.0
    for index, example in enumerate(inputs):
        feed = {name: tensor.numpy() for name, tensor in zip(input_names, example)}
        shape = tuple(example[0].shape)
        try:
            got = session.run(output_names, feed)
        except Exception as err:  # onnxruntime's own exception types
            raise ParityError(f"input {index} {shape}: onnxruntime failed: {str(err).splitlines()[0]}") from err
        with torch.no_grad():
            reference = [example[0].to(reference_dtype), *example[1:]]
            expected = detector(*reference)
        for name, ours, theirs in zip(output_names, got, expected):
            theirs = theirs.float().numpy()
            if ours.shape != theirs.shape:
                raise ParityError(f"input {index} {shape}: {name} has shape {ours.shape}, PyTorch {theirs.shape}.")
            difference = float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max(initial=0.0))
            if not difference <= tolerance:
                raise ParityError(
                    f"input {index} {shape}: {name} differs from PyTorch by {difference:.3g} > {tolerance:g}."
                )
            worst = max(worst, difference)
    return worst


@dataclass
class OnnxExportArguments:
    """Arguments of `scripts/export_onnx.py`."""

    checkpoint: str = field(metadata={"help": "Checkpoint folder (config.json, weights, preprocessor_config.json)."})
    out_dir: str = field(metadata={"help": "Folder for model.onnx, config.json and preprocessor_config.json."})
    opset: int | None = field(default=None, metadata={"help": "ONNX opset (default: the exporter's)."})
    dynamic: bool = field(default=False, metadata={"help": "Dynamic batch, height and width."})
    with_postprocess: bool = field(default=False, metadata={"help": "Also output scores, labels, xyxy boxes."})
    dtype: str = field(default="fp32", metadata={"help": "fp32 or fp16 weights and pixel_values."})
    height: int = field(default=0, metadata={"help": "Export example height (default: the processor's)."})
    width: int = field(default=0, metadata={"help": "Export example width (default: the processor's)."})
    exporter: str = field(default="dynamo", metadata={"help": "'dynamo' (torch.export) or 'torchscript'."})

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"--dtype must be one of {sorted(_DTYPES)}; got {self.dtype!r}.")
        if self.exporter not in ("dynamo", "torchscript"):
            raise ValueError(f"--exporter must be 'dynamo' or 'torchscript'; got {self.exporter!r}.")
        if self.dtype == "fp16" and self.exporter != "dynamo":
            # its LayerNormalization nodes mix float and float16 inputs, which onnxruntime refuses to load
            raise ValueError("--dtype fp16 needs --exporter dynamo (the TorchScript exporter's graph does not load).")
        if self.height < 0 or self.width < 0 or (self.height and self.height < 64) or (self.width and self.width < 64):
            raise ValueError(f"--height and --width must be >= 64; got {self.height}x{self.width}.")
        if not (Path(self.checkpoint) / "config.json").is_file():
            raise ValueError(f"{self.checkpoint}: not a checkpoint folder (no config.json).")


def _example_size(checkpoint: Path) -> tuple[int, int]:
    """The processed size of a 4:3 image under the checkpoint's processor (800x1066 for DETR's default)."""
    from image_processing.image_processing_detr_custom import DetrCustomImageProcessor
    from image_processing.sizes import get_output_image_size

    if not (checkpoint / "preprocessor_config.json").is_file():
        return 800, 1066
    processor = DetrCustomImageProcessor.from_pretrained(checkpoint)
    return tuple(get_output_image_size(480, 640, processor.size)) if processor.do_resize else (480, 640)


def export_onnx(args: OnnxExportArguments, report: Any = print) -> dict[str, Any]:
    """Exports, copies the configs and checks onnxruntime against PyTorch (see the module docstring).

    Returns:
        `{"path": model.onnx, "max_difference": float, "tolerance": float}`.

    Raises:
        ParityError: onnxruntime and PyTorch disagree.
    """
    checkpoint, out_dir = Path(args.checkpoint), Path(args.out_dir)
    dtype = _DTYPES[args.dtype]
    model = DetrCustomForObjectDetection.from_pretrained(checkpoint).eval()
    reference = OnnxDetector(model, args.with_postprocess)  # fp32, the numbers users get from PyTorch
    if dtype != torch.float32:
        exported = OnnxDetector(
            DetrCustomForObjectDetection.from_pretrained(checkpoint, dtype=dtype), args.with_postprocess
        )
    else:
        exported = reference
    height, width = _example_size(checkpoint)
    height, width = args.height or height, args.width or width
    inputs = parity_inputs(height, width, args.dynamic, args.with_postprocess, dtype)
    path = export_to_onnx(
        exported, inputs[-1], out_dir / "model.onnx", args.opset, args.dynamic, dynamo=args.exporter == "dynamo"
    )
    for name in ("config.json", "preprocessor_config.json"):
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out_dir / name)
    tolerance = 1e-4 if dtype == torch.float32 else _FP16_TOLERANCE
    worst = check_onnx_parity(path, reference, inputs, tolerance)
    report(f"wrote {path}; onnxruntime matches PyTorch within {worst:.2g} (tolerance {tolerance:g}) on 3 inputs")
    return {"path": str(path), "max_difference": worst, "tolerance": tolerance}
