"""Converting facebookresearch/detr panoptic checkpoints (`DETRsegm`, `--masks`) through the one rename table.

The original segmentation model is rebuilt from models/segmentation.py (`MHAttentionMap`, `MaskHeadSmallConv`,
`DETRsegm.forward`) on top of the original DETR of `test_convert_original`; d_model 128 with 8 heads, the smallest
width whose `GroupNorm(8, d_model / 16)` the original can build.
"""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling_detr_custom import DetrCustomConfig, DetrCustomForSegmentation
from modeling_detr_custom.apps.convert_original import convert_original_state_dict
from tests.test_convert_original import SCRIPT, OriginalDetr, padded_batch

SEGMENTATION = {"d_model": 128, "num_heads": 8, "ffn_dim": 64}


class _MHAttentionMap(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.hidden_dim = num_heads, hidden_dim
        self.q_linear, self.k_linear = nn.Linear(hidden_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight.unsqueeze(-1).unsqueeze(-1), self.k_linear.bias)
        qh = q.view(q.shape[0], q.shape[1], self.num_heads, self.hidden_dim // self.num_heads)
        kh = k.view(k.shape[0], self.num_heads, self.hidden_dim // self.num_heads, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        weights.masked_fill_(mask.unsqueeze(1).unsqueeze(1), float("-inf"))
        return F.softmax(weights.flatten(2), dim=-1).view_as(weights)


class _MaskHeadSmallConv(nn.Module):
    def __init__(self, dim: int, fpn_dims: list[int], context_dim: int) -> None:
        super().__init__()
        inter_dims = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1, self.gn1 = nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim)
        for index in range(2, 6):
            setattr(self, f"lay{index}", nn.Conv2d(inter_dims[index - 2], inter_dims[index - 1], 3, padding=1))
            setattr(self, f"gn{index}", nn.GroupNorm(8, inter_dims[index - 1]))
        self.out_lay = nn.Conv2d(inter_dims[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter_dims[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter_dims[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter_dims[3], 1)

    def forward(self, x: Tensor, bbox_mask: Tensor, fpns: list[Tensor]) -> Tensor:
        def expand(tensor: Tensor, length: int) -> Tensor:
            return tensor.unsqueeze(1).repeat(1, int(length), 1, 1, 1).flatten(0, 1)

        x = torch.cat([expand(x, bbox_mask.shape[1]), bbox_mask.flatten(0, 1)], 1)
        x = F.relu(self.gn2(self.lay2(F.relu(self.gn1(self.lay1(x))))))
        for adapter, lay, gn, fpn in zip(
            (self.adapter1, self.adapter2, self.adapter3), (self.lay3, self.lay4, self.lay5),
            (self.gn3, self.gn4, self.gn5), fpns,
        ):  # fmt: skip
            cur_fpn = expand(adapter(fpn), x.size(0) / fpn.size(0))
            x = F.relu(gn(lay(cur_fpn + F.interpolate(x, size=cur_fpn.shape[-2:], mode="nearest"))))
        return self.out_lay(x)


class OriginalDetrSegm(nn.Module):
    """facebookresearch/detr's DETRsegm (eval mode) with the original module names."""

    def __init__(self, num_queries: int = 8) -> None:
        super().__init__()
        self.detr = OriginalDetr(**SEGMENTATION, num_queries=num_queries)
        d_model, heads = SEGMENTATION["d_model"], SEGMENTATION["num_heads"]
        self.bbox_attention = _MHAttentionMap(d_model, heads)
        self.mask_head = _MaskHeadSmallConv(d_model + heads, [256, 128, 64], d_model)  # ResNet-18 stages 3, 2, 1

    def forward(self, pixel_values: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        detr, body = self.detr, self.detr.backbone[0].body
        x = body.maxpool(body.relu(body.bn1(body.conv1(pixel_values))))
        stages = []
        for layer in (body.layer1, body.layer2, body.layer3, body.layer4):
            x = layer(x)
            stages.append(x)
        mask = F.interpolate(padding_mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        pos = detr.backbone[1](mask).flatten(2).permute(2, 0, 1)
        src_proj = detr.input_proj(x)
        memory = src_proj.flatten(2).permute(2, 0, 1)
        for layer in detr.transformer.encoder.layers:
            memory = layer(memory, mask.flatten(1), pos)
        query_pos = detr.query_embed.weight.unsqueeze(1).repeat(1, pixel_values.shape[0], 1)
        tgt = torch.zeros_like(query_pos)
        for layer in detr.transformer.decoder.layers:
            tgt = layer(tgt, memory, mask.flatten(1), pos, query_pos)
        hs = detr.transformer.decoder.norm(tgt).transpose(0, 1)  # (B, Q, C)
        memory = memory.permute(1, 2, 0).view(src_proj.shape)
        bbox_mask = self.bbox_attention(hs, memory, mask)
        seg_masks = self.mask_head(src_proj, bbox_mask, [stages[2], stages[1], stages[0]])
        masks = seg_masks.view(hs.shape[0], hs.shape[1], *seg_masks.shape[-2:])
        return detr.class_embed(hs), detr.bbox_embed(hs).sigmoid(), masks


def make_original_segm(seed: int = 0) -> OriginalDetrSegm:
    torch.manual_seed(seed)
    model = OriginalDetrSegm().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.dim() == 1:
                tensor.add_(0.1 * torch.randn_like(tensor))
    return model


def test_converted_panoptic_model_matches_the_original_forward() -> None:
    original = make_original_segm()
    state_dict, config_kwargs = convert_original_state_dict(original.state_dict(), num_heads=8, task="panoptic")
    model = DetrCustomForSegmentation(DetrCustomConfig(**config_kwargs))
    model.load_state_dict(state_dict, strict=True)
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        logits, boxes, masks = original(pixel_values, pixel_mask == 0)
        outputs = model.eval()(pixel_values=pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(outputs.logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs.pred_boxes, boxes, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs.pred_masks, masks, atol=1e-4, rtol=1e-4)


def test_detection_task_refuses_a_panoptic_checkpoint_and_back() -> None:
    state_dict = make_original_segm().state_dict()
    with pytest.raises(ValueError, match="task='panoptic'"):
        convert_original_state_dict(state_dict, num_heads=8)
    detection_only = {key.removeprefix("detr."): value for key, value in state_dict.items() if key.startswith("detr.")}
    with pytest.raises(ValueError, match="task='detection'"):
        convert_original_state_dict(detection_only, num_heads=8, task="panoptic")
    del state_dict["mask_head.lay1.weight"]
    with pytest.raises(ValueError, match="missing keys \\(1\\): mask_head.lay1.weight"):
        convert_original_state_dict(state_dict, num_heads=8, task="panoptic")


def test_script_converts_with_task_panoptic(tmp_path) -> None:
    torch.save({"model": make_original_segm().state_dict()}, tmp_path / "segm.pth")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "segm.pth"), str(tmp_path / "out"), "--task", "panoptic"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = DetrCustomForSegmentation.from_pretrained(tmp_path / "out")
    assert loaded.config.d_model == 128 and loaded.mask_head.lay1.weight.shape[0] == 136
