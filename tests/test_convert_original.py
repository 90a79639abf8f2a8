"""Converting facebookresearch/detr checkpoints.

No original checkpoint can be downloaded here, so the tests rebuild the original model's module layout
(torchvision ResNet with FrozenBatchNorm2d, `nn.MultiheadAttention` with stacked `in_proj_weight`, the original
Transformer's post-/pre-norm forward) independently of the converter, fill it with random weights, and check that
the converted model reproduces the original forward on a padded batch.
"""

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection
from modeling_detr_custom.apps.convert_original import (
    COCO_2017_ID2LABEL,
    convert_original_checkpoint,
    convert_original_state_dict,
    infer_config_kwargs,
    load_original_checkpoint,
    original_key_for,
    read_id2label,
    rename_original_key,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "convert_original_checkpoint.py"
TINY = {"d_model": 32, "num_heads": 2, "encoder_layers": 2, "decoder_layers": 2, "ffn_dim": 64, "num_queries": 8}


# --- the original DETR, rebuilt from facebookresearch/detr (models/detr.py, transformer.py, backbone.py) ---


class _SinePositionEmbedding(nn.Module):
    """PositionEmbeddingSine(num_pos_feats, normalize=True): positions normalised over the unpadded region."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * 2 * math.pi
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * 2 * math.pi
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32)
        dim_t = 10000 ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class _LearnedPositionEmbedding(nn.Module):
    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(50, num_pos_feats)
        self.col_embed = nn.Embedding(50, num_pos_feats)

    def forward(self, mask: Tensor) -> Tensor:
        h, w = mask.shape[-2:]
        x_emb = self.col_embed(torch.arange(w))
        y_emb = self.row_embed(torch.arange(h))
        pos = torch.cat([x_emb.unsqueeze(0).repeat(h, 1, 1), y_emb.unsqueeze(1).repeat(1, w, 1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).repeat(mask.shape[0], 1, 1, 1)


class _Backbone(nn.Module):
    """Holds the torchvision ResNet as `body` (the original's IntermediateLayerGetter keeps the same names)."""

    def __init__(self, depth: int, dilation: bool) -> None:
        super().__init__()
        self.body = getattr(torchvision.models, f"resnet{depth}")(
            weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, dilation]
        )
        self.body.fc = nn.Identity()  # not in the original's state dict

    def forward(self, x: Tensor) -> Tensor:
        body = self.body
        x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        return body.layer4(body.layer3(body.layer2(body.layer1(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads)
        self.linear1, self.linear2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(self, src: Tensor, padding_mask: Tensor, pos: Tensor) -> Tensor:
        if self.pre_norm:
            x = self.norm1(src)
            src = src + self.self_attn(x + pos, x + pos, x, key_padding_mask=padding_mask)[0]
            return src + self.linear2(F.relu(self.linear1(self.norm2(src))))
        src = self.norm1(src + self.self_attn(src + pos, src + pos, src, key_padding_mask=padding_mask)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _DecoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads)
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads)
        self.linear1, self.linear2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, memory: Tensor, padding_mask: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        if self.pre_norm:
            x = self.norm1(tgt)
            tgt = tgt + self.self_attn(x + query_pos, x + query_pos, x)[0]
            x = self.norm2(tgt)
            tgt = tgt + self.multihead_attn(x + query_pos, memory + pos, memory, key_padding_mask=padding_mask)[0]
            return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))
        tgt = self.norm1(tgt + self.self_attn(tgt + query_pos, tgt + query_pos, tgt)[0])
        cross = self.multihead_attn(tgt + query_pos, memory + pos, memory, key_padding_mask=padding_mask)[0]
        tgt = self.norm2(tgt + cross)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class _Stack(nn.Module):
    def __init__(self, layers: list[nn.Module], norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if norm is not None:  # the original's post-norm encoder has no final norm, hence no keys
            self.norm = norm


class _MLP(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, 4)])

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class OriginalDetr(nn.Module):
    """facebookresearch/detr's DETR (detection, eval mode) with the original module names."""

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 5,
        pre_norm: bool = False,
        learned_positions: bool = False,
        dilation: bool = False,
        d_model: int = 32,
        num_heads: int = 2,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        ffn_dim: int = 64,
        num_queries: int = 8,
    ) -> None:
        super().__init__()
        position = (_LearnedPositionEmbedding if learned_positions else _SinePositionEmbedding)(d_model // 2)
        self.backbone = nn.ModuleList([_Backbone(depth, dilation), position])
        encoder = [_EncoderLayer(d_model, num_heads, ffn_dim, pre_norm) for _ in range(encoder_layers)]
        decoder = [_DecoderLayer(d_model, num_heads, ffn_dim, pre_norm) for _ in range(decoder_layers)]
        self.transformer = nn.Module()
        self.transformer.encoder = _Stack(encoder, nn.LayerNorm(d_model) if pre_norm else None)
        self.transformer.decoder = _Stack(decoder, nn.LayerNorm(d_model))
        self.input_proj = nn.Conv2d(512 if depth < 50 else 2048, d_model, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = _MLP(d_model)

    def forward(self, pixel_values: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """padding_mask (B, H, W) True on padding, as the original's NestedTensor. Returns logits, boxes."""
        features = self.backbone[0](pixel_values)
        mask = F.interpolate(padding_mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        pos = self.backbone[1](mask).flatten(2).permute(2, 0, 1)  # (HW, B, C)
        memory = self.input_proj(features).flatten(2).permute(2, 0, 1)  # (HW, B, C)
        mask = mask.flatten(1)  # (B, HW)
        for layer in self.transformer.encoder.layers:
            memory = layer(memory, mask, pos)
        if hasattr(self.transformer.encoder, "norm"):
            memory = self.transformer.encoder.norm(memory)
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, pixel_values.shape[0], 1)  # (Q, B, C)
        tgt = torch.zeros_like(query_pos)
        for layer in self.transformer.decoder.layers:
            tgt = layer(tgt, memory, mask, pos, query_pos)
        hidden = self.transformer.decoder.norm(tgt).transpose(0, 1)  # (B, Q, C)
        return self.class_embed(hidden), self.bbox_embed(hidden).sigmoid()


def make_original(seed: int = 0, **kwargs: object) -> OriginalDetr:
    """A random-weight original DETR in eval mode; biases, norms and BatchNorm statistics are random too."""
    torch.manual_seed(seed)
    model = OriginalDetr(**{**TINY, **kwargs}).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.dim() == 1:
                tensor.add_(0.1 * torch.randn_like(tensor))
    return model


def padded_batch() -> tuple[Tensor, Tensor]:
    """pixel_values (2, 3, 96, 128) and pixel_mask (1 = real pixel); the second image is 64 x 80, padded."""
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 96, 128, generator=generator)
    pixel_mask = torch.ones(2, 96, 128, dtype=torch.long)
    pixel_mask[1, 64:, :] = 0
    pixel_mask[1, :, 80:] = 0
    pixel_values[1, :, 64:, :] = 0
    pixel_values[1, :, :, 80:] = 0
    return pixel_values, pixel_mask


def converted_model(original: OriginalDetr, **options: object) -> DetrCustomForObjectDetection:
    state_dict, config_kwargs = convert_original_state_dict(original.state_dict(), **options)
    model = DetrCustomForObjectDetection(DetrCustomConfig(**config_kwargs))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def assert_same_predictions(model: nn.Module, original: OriginalDetr) -> None:
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        expected_logits, expected_boxes = original(pixel_values, pixel_mask == 0)
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(outputs.logits, expected_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs.pred_boxes, expected_boxes, atol=1e-4, rtol=1e-4)


def load_cli():
    return importlib.import_module("modeling_detr_custom.apps.cli.convert_original_checkpoint")


# --- the rename table ---


def test_every_original_key_has_a_target_that_maps_back() -> None:
    state_dict = make_original(pre_norm=True, learned_positions=True).state_dict()
    for key in state_dict:
        targets = rename_original_key(key)
        assert targets, key
        assert all(original_key_for(target) == key for target in targets)
    assert rename_original_key("transformer.encoder.layers.0.self_attn.in_proj_weight") == [
        f"model.encoder.layers.0.self_attn.{name}_proj.weight" for name in "qkv"
    ]
    assert rename_original_key("backbone.0.body.layer1.0.bn1.num_batches_tracked") == []
    assert rename_original_key("transformer.encoder.layers.0.self_attn.in_proj") is None


# --- the converted model reproduces the original forward ---


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="post-norm"),
        pytest.param({"pre_norm": True}, id="pre-norm"),
        pytest.param({"learned_positions": True}, id="learned-positions"),
    ],
)
def test_converted_model_matches_original_forward(options: dict) -> None:
    original = make_original(**options)
    assert_same_predictions(converted_model(original, num_heads=TINY["num_heads"]), original)


def test_dc5_resnet50_matches_original_forward() -> None:
    original = make_original(depth=50, dilation=True)
    assert_same_predictions(converted_model(original, num_heads=TINY["num_heads"], dilation=True), original)


def test_wrong_number_of_heads_changes_predictions() -> None:
    """The heads are not in the weights; the option must reach the model (8 heads is a different model)."""
    original = make_original()
    with pytest.raises(AssertionError):
        assert_same_predictions(converted_model(original, num_heads=8), original)


# --- configuration inferred from the weights ---


def test_inferred_configuration() -> None:
    original = make_original(
        num_classes=7, d_model=48, encoder_layers=3, decoder_layers=1, ffn_dim=40, num_queries=5, num_heads=3
    )
    state_dict = original.state_dict()
    assert infer_config_kwargs(state_dict) == {
        "backbone": "resnet18",
        "d_model": 48,
        "encoder_layers": 3,
        "decoder_layers": 1,
        "encoder_ffn_dim": 40,
        "decoder_ffn_dim": 40,
        "num_queries": 5,
        "num_labels": 7,
        "pre_norm": False,
        "position_embedding_type": "sine",
    }
    _, config_kwargs = convert_original_state_dict(state_dict, num_heads=3)
    assert config_kwargs["encoder_attention_heads"] == config_kwargs["decoder_attention_heads"] == 3
    assert config_kwargs["num_labels"] == 7 and "id2label" not in config_kwargs


def test_inferred_resnet50_pre_norm_learned_positions() -> None:
    inferred = infer_config_kwargs(make_original(depth=50, pre_norm=True, learned_positions=True).state_dict())
    assert inferred["backbone"] == "resnet50"
    assert inferred["pre_norm"] is True
    assert inferred["position_embedding_type"] == "learned"


def test_91_class_checkpoint_gets_coco_names() -> None:
    _, config_kwargs = convert_original_state_dict(make_original(num_classes=91).state_dict(), num_heads=2)
    assert config_kwargs["id2label"] == COCO_2017_ID2LABEL
    assert COCO_2017_ID2LABEL[1] == "person" and COCO_2017_ID2LABEL[90] == "toothbrush"
    assert COCO_2017_ID2LABEL[0] == COCO_2017_ID2LABEL[12] == "N/A"
    assert sum(name != "N/A" for name in COCO_2017_ID2LABEL.values()) == 80


def test_unknown_resnet_layout_is_rejected() -> None:
    state_dict = make_original().state_dict()
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith("backbone.0.body.layer3.1.")}
    with pytest.raises(ValueError, match=r"\(2, 2, 1, 2\) basic blocks"):
        infer_config_kwargs(state_dict)


# --- every key consumed, every shape checked ---


def test_extra_key_is_listed() -> None:
    state_dict = make_original().state_dict()
    state_dict["transformer.encoder.layers.0.linear3.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): transformer\.encoder\.layers\.0\.linear3\.weight"):
        convert_original_state_dict(state_dict, num_heads=2)


def test_key_the_inferred_model_does_not_use_is_listed() -> None:
    """A final encoder norm makes the model pre-norm; with an explicit post-norm it has no place to go."""
    state_dict = make_original(pre_norm=True).state_dict()
    with pytest.raises(ValueError, match="contradicts the weights"):
        convert_original_state_dict(state_dict, num_heads=2, pre_norm=False)
    del state_dict["transformer.encoder.norm.bias"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): transformer\.encoder\.norm\.bias"):
        convert_original_state_dict(state_dict, num_heads=2)


def test_missing_key_is_listed_by_its_original_name() -> None:
    state_dict = make_original().state_dict()
    del state_dict["transformer.decoder.layers.1.multihead_attn.in_proj_bias"]
    del state_dict["backbone.0.body.layer2.0.downsample.1.running_var"]
    with pytest.raises(ValueError, match=r"missing keys \(2\)") as error:
        convert_original_state_dict(state_dict, num_heads=2)
    assert "transformer.decoder.layers.1.multihead_attn.in_proj_bias" in str(error.value)
    assert "backbone.0.body.layer2.0.downsample.1.running_var" in str(error.value)


def test_shape_mismatch_is_listed() -> None:
    state_dict = make_original().state_dict()
    state_dict["transformer.encoder.layers.1.norm2.weight"] = torch.ones(31)
    state_dict["bbox_embed.layers.2.weight"] = torch.ones(5, 32)
    state_dict["transformer.decoder.layers.0.self_attn.in_proj_bias"] = torch.zeros(32)
    with pytest.raises(ValueError, match=r"shape mismatches \(3\)") as error:
        convert_original_state_dict(state_dict, num_heads=2)
    assert "missing keys" not in str(error.value)
    assert "in_proj_bias (32,) is not 3 stacked projections" in str(error.value)
    assert "transformer.encoder.layers.1.norm2.weight -> model.encoder.layers.1.final_layer_norm.weight" in str(
        error.value
    )
    assert "bbox_embed.layers.2.weight" in str(error.value)


def test_segmentation_checkpoint_is_rejected() -> None:
    state_dict = {f"detr.{key}": value for key, value in make_original().state_dict().items()}
    with pytest.raises(ValueError, match="panoptic segmentation"):
        convert_original_state_dict(state_dict)


def test_id2label_of_the_wrong_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"labels 0\.\.4"):
        convert_original_state_dict(make_original().state_dict(), num_heads=2, id2label={0: "cat", 1: "dog"})


# --- reading checkpoints and class names ---


def test_training_checkpoint_with_args_loads_and_sets_heads(tmp_path: Path) -> None:
    """What the original main.py saves: model, optimizer, epoch, and the argparse Namespace (nheads, dilation)."""
    original = make_original()
    path = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(nheads=2, dilation=False, lr=1e-4, backbone="resnet18", pre_norm=False)
    torch.save({"model": original.state_dict(), "optimizer": {"state": {}}, "epoch": 3, "args": args}, path)
    state_dict, training_args = load_original_checkpoint(path)
    assert training_args["nheads"] == 2 and state_dict.keys() == original.state_dict().keys()

    model = convert_original_checkpoint(path, tmp_path / "out")  # heads from the saved args
    assert_same_predictions(model, original)
    with pytest.raises(ValueError, match=r"num_heads=8 contradicts .* \(nheads=2\)"):
        convert_original_checkpoint(path, tmp_path / "out", num_heads=8)


def test_bare_state_dict_and_non_checkpoint_files(tmp_path: Path) -> None:
    original = make_original()
    torch.save(original.state_dict(), tmp_path / "bare.pth")
    assert load_original_checkpoint(tmp_path / "bare.pth")[0].keys() == original.state_dict().keys()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read with torch.load"):
        load_original_checkpoint(tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError):
        load_original_checkpoint(tmp_path / "absent.pth")


def test_read_id2label_forms(tmp_path: Path) -> None:
    names = {0: "cat", 1: "dog"}
    (tmp_path / "list.json").write_text(json.dumps(["cat", "dog"]))
    (tmp_path / "dict.json").write_text(json.dumps({"0": "cat", "1": "dog"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "detr", "id2label": {"1": "dog", "0": "cat"}}))
    for name in ("list.json", "dict.json", "config.json"):
        assert read_id2label(tmp_path / name) == names
    (tmp_path / "bad.json").write_text(json.dumps({"cat": 0}))
    with pytest.raises(ValueError, match="JSON list of class names"):
        read_id2label(tmp_path / "bad.json")


# --- the command line ---


def test_cli_end_to_end(tmp_path: Path) -> None:
    original = make_original(num_classes=2)
    torch.save({"model": original.state_dict()}, tmp_path / "detr.pth")
    (tmp_path / "names.json").write_text(json.dumps(["cat", "dog"]))
    command = [sys.executable, str(SCRIPT), str(tmp_path / "detr.pth"), str(tmp_path / "out")]
    command += ["--num_heads", "2", "--no_pre_norm", "--id2label", str(tmp_path / "names.json")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "detr_custom" and "auto_map" in config
    assert config["id2label"] == {"0": "cat", "1": "dog"}
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    assert_same_predictions(DetrCustomForObjectDetection.from_pretrained(tmp_path / "out").eval(), original)


def test_cli_rejects_extra_key_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dict = make_original().state_dict()
    state_dict["class_embed.extra"] = torch.zeros(1)
    torch.save({"model": state_dict}, tmp_path / "detr.pth")
    assert load_cli().main([str(tmp_path / "detr.pth"), str(tmp_path / "out"), "--num-heads", "2"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error:")
    assert "unexpected keys (1): class_embed.extra" in stderr
    assert not (tmp_path / "out").exists()


def test_cli_rejects_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dict = make_original().state_dict()
    del state_dict["transformer.decoder.norm.weight"]
    torch.save({"model": state_dict}, tmp_path / "detr.pth")
    assert load_cli().main([str(tmp_path / "detr.pth"), str(tmp_path / "out"), "--num-heads", "2"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error:")
    assert "missing keys (1): transformer.decoder.norm.weight" in stderr


def test_cli_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_cli().parse_arguments(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for option in ("--num-heads", "--dilation", "--no-dilation", "--pre-norm", "--id2label FILE", "COCO 2017"):
        assert option in help_text
