"""DetrCustomForSegmentation: parity with transformers' DetrForSegmentation, the mask losses, freezing, loading.

transformers creates and saves random weights (its Hub format: the original's mask head names); our model loads
them with no renaming and every key consumed. transformers runs with `auxiliary_loss=False` (REFERENCE item 4).
"""

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForImageSegmentation

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection, DetrCustomForSegmentation
from modeling_detr_custom.model.mask_losses import dice_loss, masked_sigmoid_focal_loss
from modeling_detr_custom.testing_utils import (
    TINY_SEGMENTATION_CONFIG,
    make_labels,
    make_masks,
    make_pixel_inputs,
    randomize_weights_,
)


def _valid_sizes(pixel_mask: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(mask.any(1).sum()), int(mask.any(0).sum())) for mask in pixel_mask]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, transformers.DetrForSegmentation]:
    """A transformers DetrForSegmentation folder with random weights, and the model that wrote it."""
    torch.manual_seed(0)
    config = transformers.DetrConfig(use_timm_backbone=True, auxiliary_loss=False, **TINY_SEGMENTATION_CONFIG)
    reference = transformers.DetrForSegmentation(config)
    randomize_weights_(reference, seed=1)
    folder = tmp_path_factory.mktemp("transformers_detr_segmentation")
    reference.save_pretrained(folder)
    return str(folder), reference.eval()


@pytest.fixture(scope="module")
def model(checkpoint) -> DetrCustomForSegmentation:
    return DetrCustomForSegmentation.from_pretrained(checkpoint[0]).eval()


def test_loads_transformers_checkpoint_with_every_key_consumed_and_predicts_the_same(checkpoint) -> None:
    folder, reference = checkpoint
    model, info = DetrCustomForSegmentation.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs = make_pixel_inputs(batch_size=2, height=96, width=128, seed=2)
    assert inputs["pixel_mask"][1].float().mean() < 0.8  # a padded batch of two sizes
    with torch.no_grad():
        expected, outputs = reference(**inputs), model.eval()(**inputs)
        unpadded = model(inputs["pixel_values"])
    assert outputs.pred_masks.shape == (2, 8, 24, 32)
    for name in ("logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(getattr(outputs, name), getattr(expected, name), atol=1e-4, rtol=0)
    # The padding mask matters for these weights, so the comparison above exercises it.
    assert (unpadded.logits[1] - outputs.logits[1]).abs().max() > 1e-2
    assert (unpadded.pred_masks[1] - outputs.pred_masks[1]).abs().max() > 1e-3


def test_our_checkpoint_loads_into_transformers(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    reference, info = transformers.DetrForSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = make_pixel_inputs(seed=5)
    with torch.no_grad():
        expected, outputs = reference.eval()(**inputs), model(**inputs)
    torch.testing.assert_close(outputs.pred_masks, expected.pred_masks, atol=1e-4, rtol=0)


def test_auto_class_loads_the_segmentation_model(checkpoint, tmp_path) -> None:
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG))
    model.save_pretrained(tmp_path)
    assert type(AutoModelForImageSegmentation.from_pretrained(tmp_path)) is DetrCustomForSegmentation


def test_loss_has_mask_terms_and_reaches_every_trainable_parameter() -> None:
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG)).train()
    inputs = make_pixel_inputs(height=64, width=96)
    labels = make_masks(make_labels((3, 1)), _valid_sizes(inputs["pixel_mask"]))
    outputs = model(**inputs, labels=labels)
    assert {"loss_mask", "loss_dice", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_0"} <= set(outputs.loss_dict)
    assert torch.isfinite(outputs.loss) and outputs.loss_dict["loss_dice"] > 0
    outputs.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None for p in trainable.values()), [n for n, p in trainable.items() if p.grad is None]


def test_freeze_detector_trains_the_mask_head_only() -> None:
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG)).train()
    model.freeze_detector()
    inputs = make_pixel_inputs(height=64, width=96)
    model(**inputs, labels=make_masks(make_labels((2, 2)), _valid_sizes(inputs["pixel_mask"]))).loss.backward()
    with_grad = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"bbox_attention", "mask_head"}


def test_from_detector_keeps_the_detections(tmp_path) -> None:
    torch.manual_seed(0)
    detector = DetrCustomForObjectDetection(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG)).eval()
    randomize_weights_(detector, seed=3)
    detector.save_pretrained(tmp_path)
    model = DetrCustomForSegmentation.from_detector(str(tmp_path)).eval()
    inputs = make_pixel_inputs(seed=1)
    with torch.no_grad():
        expected, outputs = detector(**inputs), model(**inputs)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=0, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=0, rtol=0)


_CONVERGENCE = {"box_refinement": "iterative", "query_anchor_boxes": True, "num_denoising_groups": 2}
_NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}


def _detector_and_segmentation(**overrides) -> tuple[DetrCustomForObjectDetection, DetrCustomForSegmentation]:
    """The two models on the same (random, non-degenerate) detector weights."""
    config = DetrCustomConfig(**{**TINY_SEGMENTATION_CONFIG, **_NO_DROPOUT, **overrides})
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(config)
    randomize_weights_(model.detr, seed=4)  # not the criterion's class-weight buffer
    detector = DetrCustomForObjectDetection(config)
    detector.load_state_dict(model.detr.state_dict(), strict=True)
    return detector, model


def test_convergence_options_give_the_detectors_logits_and_boxes() -> None:
    detector, model = _detector_and_segmentation(**_CONVERGENCE)
    inputs = make_pixel_inputs(seed=6)
    with torch.no_grad():
        expected, outputs = detector.eval()(**inputs), model.eval()(**inputs)
        # The same weights read as plain DETR boxes (no anchors, no refinement) give other boxes: the options
        # matter for these weights, so the equality above is not that of a model ignoring them.
        plain = DetrCustomForObjectDetection(DetrCustomConfig(**{**TINY_SEGMENTATION_CONFIG, **_NO_DROPOUT}))
        plain.load_state_dict(detector.state_dict(), strict=False)
        plain_boxes = plain.eval()(**inputs).pred_boxes
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-6, rtol=0)
    assert (plain_boxes - expected.pred_boxes).abs().max() > 1e-2


@pytest.mark.parametrize("options", [_CONVERGENCE, {"class_loss_type": "varifocal"}], ids=["denoising", "varifocal"])
def test_training_uses_the_detectors_loss_terms(options) -> None:
    detector, model = _detector_and_segmentation(**options)
    inputs = make_pixel_inputs(height=64, width=96)
    labels = make_masks(make_labels((3, 1)), _valid_sizes(inputs["pixel_mask"]))
    torch.manual_seed(7)  # the denoising noise
    expected = detector.train()(**inputs, labels=labels).loss_dict
    torch.manual_seed(7)
    outputs = model.train()(**inputs, labels=labels)
    assert set(outputs.loss_dict) == set(expected) | {"loss_mask", "loss_dice"}
    for name, value in expected.items():
        torch.testing.assert_close(outputs.loss_dict[name], value, atol=1e-5, rtol=0, msg=name)
    if "num_denoising_groups" in options:
        assert {"dn_loss_ce", "dn_loss_bbox", "dn_loss_giou"} <= set(outputs.loss_dict)
        outputs.loss.backward()
        assert all(p.grad is not None for p in model.detr.denoising.parameters())


def test_freeze_detector_keeps_weights_and_batch_norm_statistics() -> None:
    config = DetrCustomConfig(**TINY_SEGMENTATION_CONFIG, freeze_backbone_batch_norm=False, backbone_trainable_layers=5)
    torch.manual_seed(0)
    model = DetrCustomForSegmentation(config)
    model.freeze_detector()
    before = {name: value.clone() for name, value in model.detr.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = make_pixel_inputs(height=64, width=96)
    labels = make_masks(make_labels((2, 2)), _valid_sizes(inputs["pixel_mask"]))
    for _ in range(2):
        model.train()(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.detr.state_dict()
    assert any("running_mean" in name for name in after)
    assert all(torch.equal(after[name], value) for name, value in before.items())


def test_mask_losses_equal_the_original_formulas_without_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=generator)
    targets = (torch.rand(3, 50, generator=generator) > 0.5).float()
    valid = torch.ones_like(targets)
    # facebookresearch/detr models/segmentation.py
    probability = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    focal = (0.25 * targets + 0.75 * (1 - targets)) * bce * (1 - p_t) ** 2
    dice = 1 - (2 * (probability * targets).sum(1) + 1) / (probability.sum(1) + targets.sum(1) + 1)
    torch.testing.assert_close(masked_sigmoid_focal_loss(logits, targets, valid), focal.mean(1).sum())
    torch.testing.assert_close(dice_loss(logits, targets, valid), dice.sum())


def test_padded_pixels_never_count_in_the_mask_losses() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 40, generator=generator)
    targets = (torch.rand(2, 40, generator=generator) > 0.5).float()
    valid = torch.ones_like(targets)
    valid[:, 30:] = 0
    changed_logits, changed_targets = logits.clone(), targets.clone()
    changed_logits[:, 30:] = 10.0
    changed_targets[:, 30:] = 0.0
    for loss in (masked_sigmoid_focal_loss, dice_loss):
        torch.testing.assert_close(loss(logits, targets, valid), loss(changed_logits, changed_targets, valid))
        # ... and equal the loss on the valid pixels alone.
        torch.testing.assert_close(loss(logits, targets, valid), loss(logits[:, :30], targets[:, :30], valid[:, :30]))


def test_criterion_ignores_predictions_and_targets_in_the_padding() -> None:
    """Image 1 is valid on its top-left 32x48 pixels of a 64x96 batch; masks are predicted at stride 4 (16x24).
    Bilinear upsampling reads mask rows <= 8 and columns <= 12 for the valid pixels, so anything beyond them, and
    any target value in the padding, must leave the loss unchanged."""
    torch.manual_seed(0)
    criterion = DetrCustomForSegmentation(DetrCustomConfig(**TINY_SEGMENTATION_CONFIG)).criterion
    pixel_mask = torch.ones(2, 64, 96, dtype=torch.int64)
    pixel_mask[1, 32:], pixel_mask[1, :, 48:] = 0, 0
    labels = make_masks(make_labels((2, 3)), [(64, 96), (64, 96)])
    for target in labels:
        target["masks"][:, :, 48:] *= 0  # no object in image 1's padding...
    logits, boxes = torch.randn(2, 8, 4), torch.rand(2, 8, 4) * 0.5 + 0.25
    pred_masks = torch.randn(2, 8, 16, 24)
    _, losses = criterion(logits, boxes, labels, pred_masks=pred_masks, pixel_mask=pixel_mask)
    changed_masks = pred_masks.clone()
    changed_masks[1, :, 9:], changed_masks[1, :, :, 13:] = 7.0, -7.0
    labels[1]["masks"][:, 32:] = 1  # ... or a mask covering it
    _, changed = criterion(logits, boxes, labels, pred_masks=changed_masks, pixel_mask=pixel_mask)
    assert losses["loss_mask"] > 0 and losses["loss_dice"] > 0
    for name in ("loss_mask", "loss_dice"):
        torch.testing.assert_close(changed[name], losses[name], atol=1e-6, rtol=0)
    # Without the pixel_mask the padding counts (as in the original), and the losses change.
    _, counted = criterion(logits, boxes, labels, pred_masks=changed_masks)
    assert (counted["loss_mask"] - losses["loss_mask"]).abs() > 1e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 8, "encoder_attention_heads": 2, "decoder_attention_heads": 2}, "d_model >= 16"),
        ({"num_query_groups": 2}, "num_query_groups=2"),
    ],
)
def test_unsupported_configs_are_refused_by_name(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        DetrCustomForSegmentation(DetrCustomConfig(**{**TINY_SEGMENTATION_CONFIG, **overrides}))


def test_widths_that_8_does_not_divide_build_and_run() -> None:
    """d_model 32 + 2 heads = 34 (or + 4 = 36, like the demo preset's 128 + 4): transformers and the original
    refuse them (GroupNorm with 8 groups); here their GroupNorm takes the largest divisor of 8 that divides them."""
    for heads, groups in ((2, 2), (4, 4)):
        config = DetrCustomConfig(
            **{**TINY_SEGMENTATION_CONFIG, "encoder_attention_heads": heads, "decoder_attention_heads": heads}
        )
        model = DetrCustomForSegmentation(config).eval()
        assert model.mask_head.gn1.num_groups == groups
        with torch.no_grad():
            assert torch.isfinite(model(**make_pixel_inputs()).pred_masks).all()


def test_bad_inputs_are_refused_by_name(model) -> None:
    inputs = make_pixel_inputs()
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(2, 6, 32), pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match=r"labels\[0\]\['masks'\]"):
        model(**inputs, labels=make_labels((1, 1)))
    too_large = make_masks(make_labels((1, 1)), [(65, 96), (64, 96)])
    with pytest.raises(ValueError, match="larger than the 64x96 input"):
        model(**inputs, labels=too_large)
