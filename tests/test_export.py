"""ONNX export (both exporters) with onnxruntime parity, `torch.jit.trace` and `scripts/export_onnx.py`, on tiny
configs of the architectures users train: frozen-BN default, the demo preset's options, DC5."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomImageProcessor
from modeling_detr_custom.apps.export_onnx import (
    OnnxDetector,
    ParityError,
    check_onnx_parity,
    export_to_onnx,
    parity_inputs,
)
from modeling_detr_custom.model.fused_conv_bn import ConvFrozenBatchNorm2d
from tests.conftest import make_tiny_config

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = {
    "frozen_bn": {},
    "demo_preset": {"query_anchor_boxes": True, "freeze_backbone_batch_norm": False, "box_refinement": "iterative"},
    "dc5": {"dilation": True},
}


def _model(**overrides) -> DetrCustomForObjectDetection:
    torch.manual_seed(0)
    return DetrCustomForObjectDetection(make_tiny_config(**overrides)).eval()


def test_default_architecture_uses_the_oneDNN_speed_path_that_exporters_cannot_take() -> None:
    # The premise of the fallback: the default model folds its frozen BatchNorms into convolutions.
    model = _model()
    assert any(isinstance(module, ConvFrozenBatchNorm2d) for module in model.modules())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_torchscript_onnx_exporter_dynamic_sizes_match_pytorch(architecture: str, tmp_path: Path) -> None:
    detector = OnnxDetector(_model(**ARCHITECTURES[architecture]), with_postprocess=True)
    inputs = parity_inputs(64, 96, dynamic=True, with_postprocess=True)
    path = export_to_onnx(detector, inputs[-1], tmp_path / "model.onnx", dynamic=True, dynamo=False)
    assert check_onnx_parity(path, detector, inputs, tolerance=1e-4) <= 1e-4
    # The three inputs have different batch sizes and image sizes: the graph is dynamic, not specialised.
    assert len({tuple(example[0].shape) for example in inputs}) == 3


def test_dynamo_onnx_exporter_dynamic_sizes_with_a_padded_batch_match_pytorch(tmp_path: Path) -> None:
    detector = OnnxDetector(_model(), with_postprocess=True)
    inputs = parity_inputs(64, 96, dynamic=True, with_postprocess=True)
    path = export_to_onnx(detector, inputs[-1], tmp_path / "model.onnx", dynamic=True, dynamo=True)
    worst = check_onnx_parity(path, detector, inputs, tolerance=1e-4)
    assert worst <= 1e-4
    # A batch of 3 at a size none of the parity inputs has also runs.
    (larger,) = parity_inputs(80, 128, dynamic=True, with_postprocess=True, seed=1)[2:]
    larger = tuple(torch.cat([tensor, tensor[:1]]) for tensor in larger)
    check_onnx_parity(path, detector, [larger], tolerance=1e-4)


def test_parity_check_fails_loudly_on_a_different_model(tmp_path: Path) -> None:
    detector = OnnxDetector(_model())
    inputs = parity_inputs(64, 96, dynamic=False, with_postprocess=False)
    path = export_to_onnx(detector, inputs[-1], tmp_path / "model.onnx", dynamo=False)
    other = OnnxDetector(_model(num_queries=8, d_model=32, encoder_layers=1))
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_onnx_parity(path, other, inputs)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_jit_trace_runs_other_sizes_and_batches_with_the_eager_numbers(architecture: str) -> None:
    detector = OnnxDetector(_model(**ARCHITECTURES[architecture]))
    inputs = parity_inputs(64, 96, dynamic=True, with_postprocess=False)
    traced = torch.jit.trace(detector, inputs[-1], check_trace=False)
    for example in inputs:
        with torch.no_grad():
            for got, want in zip(traced(*example), detector(*example)):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    _model().save_pretrained(folder)
    DetrCustomImageProcessor(size={"shortest_edge": 64, "longest_edge": 107}).save_pretrained(folder)
    return folder


def test_script_writes_the_model_and_configs_and_reports_parity(checkpoint: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "onnx"
    command = [sys.executable, str(REPO / "scripts" / "export_onnx.py"), str(checkpoint), str(out_dir)]
    command += ["--dynamic", "--with_postprocess", "--exporter", "torchscript", "--opset", "17"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime matches PyTorch within" in result.stdout
    assert {path.name for path in out_dir.iterdir()} == {"model.onnx", "config.json", "preprocessor_config.json"}
    assert json.loads((out_dir / "config.json").read_text())["model_type"] == "detr_custom"

    import onnx

    graph = onnx.load(str(out_dir / "model.onnx")).graph
    assert [node.name for node in graph.input] == ["pixel_values", "pixel_mask", "target_sizes"]
    assert [node.name for node in graph.output] == ["logits", "pred_boxes", "scores", "labels", "boxes"]
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")


def test_fp16_export_takes_half_inputs_and_stays_within_its_stated_tolerance_of_fp32(checkpoint, tmp_path) -> None:
    import onnx
    import onnxruntime

    from modeling_detr_custom.apps.export_onnx import OnnxExportArguments, export_onnx

    args = OnnxExportArguments(checkpoint=str(checkpoint), out_dir=str(tmp_path), dynamic=True, dtype="fp16")
    result = export_onnx(args, report=lambda line: None)
    assert result["max_difference"] <= result["tolerance"] < 1e-1  # checked against the fp32 PyTorch model
    graph = onnx.load(result["path"]).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # Half the weights' bytes of the fp32 export: the weights really are fp16, not cast at the input.
    fp32 = export_onnx(OnnxExportArguments(str(checkpoint), str(tmp_path / "fp32"), dynamic=True), lambda line: None)
    assert Path(result["path"]).stat().st_size < 0.6 * Path(fp32["path"]).stat().st_size
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    pixel_values, pixel_mask = parity_inputs(70, 90, dynamic=True, with_postprocess=False, dtype=torch.float16)[0]
    feed = {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()}
    logits, boxes = session.run(["logits", "pred_boxes"], feed)
    assert str(logits.dtype) == str(boxes.dtype) == "float16" and logits.shape[:2] == boxes.shape[:2]
    assert torch.isfinite(torch.from_numpy(logits).float()).all()


def test_script_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from modeling_detr_custom.apps.cli.export_onnx import main

    for argv, message in (
        ([str(tmp_path / "missing"), str(tmp_path)], "not a checkpoint folder"),
        ([str(REPO), str(tmp_path), "--dtype", "fp16", "--exporter", "torchscript"], "needs --exporter dynamo"),
        ([str(REPO), str(tmp_path), "--dtype", "int8"], "--dtype must be one of"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_predict_onnxruntime_backend_gives_the_torch_json(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    from modeling_detr_custom.apps.export_onnx import OnnxExportArguments, export_onnx
    from modeling_detr_custom.apps.predict import ObjectDetector

    export_onnx(OnnxExportArguments(str(checkpoint), str(tmp_path), dynamic=True, exporter="torchscript"), print)
    generator = torch.Generator().manual_seed(0)
    images = [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
        for h, w in ((64, 96), (80, 64), (70, 70))
    ]
    torch_detector = ObjectDetector.from_pretrained(str(checkpoint))
    onnx_detector = ObjectDetector.from_pretrained(str(tmp_path), backend="onnxruntime")
    assert onnx_detector.backend == "onnxruntime"
    for batch in (images[:1], images):  # one image, and a padded batch of three sizes
        expected = torch_detector.detect(batch, threshold=0.0)
        got = onnx_detector.detect(batch, threshold=0.0)
        for want_image, got_image in zip(expected, got):
            assert [d["label_id"] for d in got_image] == [d["label_id"] for d in want_image]
            for want, have in zip(want_image, got_image):
                assert abs(want["score"] - have["score"]) <= 1e-4
                assert max(abs(a - b) for a, b in zip(want["box"], have["box"])) <= 1e-2


def test_predict_bf16_stays_close_to_fp32(checkpoint: Path) -> None:
    from PIL import Image

    from modeling_detr_custom.apps.predict import ObjectDetector

    image = Image.fromarray(torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8).numpy())
    fp32 = ObjectDetector.from_pretrained(str(checkpoint)).detect([image], threshold=0.0)[0]
    bf16 = ObjectDetector.from_pretrained(str(checkpoint), dtype="bf16").detect([image], threshold=0.0)[0]
    scores_fp32 = sorted(d["score"] for d in fp32)
    scores_bf16 = sorted(d["score"] for d in bf16)
    assert len(scores_fp32) == len(scores_bf16)
    assert max(abs(a - b) for a, b in zip(scores_fp32, scores_bf16)) < 5e-2
    assert scores_fp32 != scores_bf16  # bf16 really ran


def test_bf16_detector_stores_matmul_weights_cast_and_gives_exactly_the_autocast_numbers(checkpoint: Path) -> None:
    from modeling_detr_custom.apps.predict import ObjectDetector

    reference = DetrCustomForObjectDetection.from_pretrained(checkpoint).eval()
    detector = ObjectDetector.from_pretrained(str(checkpoint), dtype="bf16")
    linear = detector.model.class_labels_classifier
    assert (
        linear.weight.dtype == torch.bfloat16 and detector.model.model.decoder.layernorm.weight.dtype == torch.float32
    )
    pixel_values, pixel_mask = parity_inputs(64, 96, dynamic=True, with_postprocess=False)[-1]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
    with torch.inference_mode():
        outputs = detector._forward(pixel_values, pixel_mask)
    torch.testing.assert_close(outputs["logits"], expected.logits.float(), rtol=0, atol=0)
    torch.testing.assert_close(outputs["pred_boxes"], expected.pred_boxes.float(), rtol=0, atol=0)


def test_predict_cli_rejects_bf16_with_onnxruntime_in_one_line(checkpoint: Path, capsys) -> None:
    from modeling_detr_custom.apps.cli.predict import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(checkpoint), str(checkpoint), "--backend", "onnxruntime", "--dtype", "bf16"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--dtype bf16 applies to --backend torch only.")
