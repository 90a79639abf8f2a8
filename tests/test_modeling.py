"""DetrCustomModel / DetrCustomForObjectDetection: shapes, outputs, gradients, freezing, checkpoints, labels."""

import math

import pytest
import torch
from torch import nn

from modeling_detr_custom import DetrCustomForObjectDetection, DetrCustomModel
from modeling_detr_custom.model.frozen_batch_norm import FrozenBatchNorm2d
from tests.conftest import make_labels, make_pixel_inputs, make_tiny_config, rewrite_weights


def build(seed: int = 0, **overrides: object) -> DetrCustomForObjectDetection:
    torch.manual_seed(seed)
    return DetrCustomForObjectDetection(make_tiny_config(**overrides))


@pytest.fixture(scope="module")
def model() -> DetrCustomForObjectDetection:
    """Eval-mode tiny detector; tests must not change its weights."""
    return build().eval()


def test_output_shapes(model, pixel_inputs) -> None:
    with torch.no_grad():
        outputs = model(**pixel_inputs)
    assert outputs.logits.shape == (2, 8, 4)  # 3 labels + no object
    assert outputs.pred_boxes.shape == (2, 8, 4)
    assert ((outputs.pred_boxes >= 0) & (outputs.pred_boxes <= 1)).all()
    assert outputs.last_hidden_state.shape == (2, 8, 32)
    assert outputs.encoder_last_hidden_state.shape == (2, 2 * 3, 32)  # 64x96 at stride 32
    assert outputs.loss is None and outputs.loss_dict is None
    assert outputs.auxiliary_outputs is None  # inference: no loss to use them
    assert outputs.decoder_hidden_states is None and outputs.encoder_attentions is None


def test_auxiliary_outputs_when_a_loss_can_use_them(model, pixel_inputs, detection_labels) -> None:
    with torch.no_grad():
        outputs = model(**pixel_inputs, labels=detection_labels)
    assert len(outputs.auxiliary_outputs) == 1  # decoder_layers - 1
    assert outputs.auxiliary_outputs[0]["logits"].shape == (2, 8, 4)
    assert outputs.auxiliary_outputs[0]["pred_boxes"].shape == (2, 8, 4)


def test_return_dict_false_gives_the_same_tensors(model, pixel_inputs) -> None:
    with torch.no_grad():
        outputs = model(**pixel_inputs)
        as_tuple = model(**pixel_inputs, return_dict=False)
    torch.testing.assert_close(as_tuple[0], outputs.logits)
    torch.testing.assert_close(as_tuple[1], outputs.pred_boxes)


def test_hidden_states_and_attentions_on_request(model, pixel_inputs) -> None:
    with torch.no_grad():
        plain = model(**pixel_inputs)
        outputs = model(**pixel_inputs, output_attentions=True, output_hidden_states=True)
    # Weights are computed without SDPA on request; predictions must not change.
    torch.testing.assert_close(outputs.logits, plain.logits, atol=1e-5, rtol=1e-5)
    assert len(outputs.encoder_hidden_states) == 3 and len(outputs.decoder_hidden_states) == 3
    assert [a.shape for a in outputs.encoder_attentions] == [(2, 2, 6, 6)] * 2
    assert [a.shape for a in outputs.decoder_attentions] == [(2, 2, 8, 8)] * 2
    assert [a.shape for a in outputs.cross_attentions] == [(2, 2, 8, 6)] * 2
    # Padded feature positions of image 1 (valid 39x45 of 64x96 -> 2x2 of 2x3) receive no attention.
    torch.testing.assert_close(outputs.cross_attentions[0].sum(-1), torch.ones(2, 2, 8))
    assert outputs.cross_attentions[0][1, :, :, 2].abs().max() == 0


def test_pixel_mask_none_equals_all_ones(model, pixel_inputs) -> None:
    pixel_values = pixel_inputs["pixel_values"]
    with torch.no_grad():
        without_mask = model(pixel_values)
        ones = model(pixel_values, pixel_mask=torch.ones(2, 64, 96, dtype=torch.int64))
        padded = model(**pixel_inputs)
    torch.testing.assert_close(without_mask.logits, ones.logits)
    assert not torch.allclose(padded.logits[1], ones.logits[1])  # the mask is used


def test_auxiliary_loss_switch_does_not_change_predictions(pixel_inputs) -> None:
    with_aux = build(auxiliary_loss=True).eval()
    without_aux = DetrCustomForObjectDetection(make_tiny_config(auxiliary_loss=False)).eval()
    without_aux.load_state_dict(with_aux.state_dict())
    with torch.no_grad():
        on, off = with_aux(**pixel_inputs, labels=make_labels()), without_aux(**pixel_inputs, labels=make_labels())
    torch.testing.assert_close(on.logits, off.logits, rtol=0, atol=0)
    torch.testing.assert_close(on.pred_boxes, off.pred_boxes, rtol=0, atol=0)
    assert off.auxiliary_outputs is None and len(on.auxiliary_outputs) == 1


def test_loss_terms_with_labels(model, pixel_inputs, detection_labels) -> None:
    with torch.no_grad():
        outputs = model(**pixel_inputs, labels=detection_labels)
    expected = {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error"}
    expected |= {"loss_ce_0", "loss_bbox_0", "loss_giou_0", "cardinality_error_0"}
    assert set(outputs.loss_dict) == expected
    weighted = sum(
        weight * (outputs.loss_dict[name] + outputs.loss_dict[f"{name}_0"])
        for name, weight in (("loss_ce", 1), ("loss_bbox", 5), ("loss_giou", 2))
    )
    torch.testing.assert_close(outputs.loss, weighted)
    assert math.isfinite(outputs.loss.item())


def test_images_without_objects_give_a_finite_loss(model, pixel_inputs) -> None:
    with torch.no_grad():
        outputs = model(**pixel_inputs, labels=make_labels((0, 0)))
    assert math.isfinite(outputs.loss.item())
    assert outputs.loss_dict["loss_bbox"] == 0


def _gradients(model: nn.Module, pixel_inputs: dict, labels: list) -> dict[str, torch.Tensor | None]:
    model.zero_grad()
    model(**pixel_inputs, labels=labels).loss.backward()
    return {name: param.grad for name, param in model.named_parameters()}


def test_gradients_reach_every_trainable_parameter_and_no_frozen_one(pixel_inputs, detection_labels) -> None:
    model = build(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0).train()
    grads = _gradients(model, pixel_inputs, detection_labels)
    backbone = "model.backbone.conv_encoder.model."
    # At initialisation the first decoder layer's self-attention block outputs exactly zero, as in the original:
    # its input is the zero decoder input and the attention biases start at zero. So its weights, and the weight
    # of the LayerNorm that follows, start with a zero gradient. Every other trainable parameter must get one.
    first_layer = "model.decoder.layers.0."
    constant_output = {first_layer + "self_attn_layer_norm.weight"} | {
        f"{first_layer}self_attn.{projection}.{kind}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj")
        for kind in ("weight", "bias")
        if (projection, kind) not in {("v_proj", "bias"), ("out_proj", "bias")}
    }
    for name, param in model.named_parameters():
        frozen = name.startswith((backbone + "conv1", backbone + "layer1"))
        assert param.requires_grad == (not frozen), name
        if frozen:
            assert grads[name] is None, name
        elif name in constant_output:
            assert grads[name] is not None and grads[name].abs().sum() == 0, name
        else:
            assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert any(name.startswith(backbone + "layer2") for name, _ in model.named_parameters() if grads[name] is not None)
    # FrozenBatchNorm2d holds buffers only: nothing of it can be trained, and no num_batches_tracked.
    frozen_norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen_norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(not list(m.parameters()) for m in frozen_norms)
    assert not any(key.endswith("num_batches_tracked") for key in model.state_dict())


@pytest.mark.parametrize(("trainable_layers", "trainable_prefixes"), [
    (0, ()),
    (1, ("layer4",)),
    (3, ("layer2", "layer3", "layer4")),
    (5, ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")),
])  # fmt: skip
def test_backbone_trainable_layers_with_trainable_batch_norm(trainable_layers, trainable_prefixes) -> None:
    model = build(freeze_backbone_batch_norm=False, backbone_trainable_layers=trainable_layers)
    backbone = model.model.backbone.conv_encoder.model
    assert any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert any(key.endswith("num_batches_tracked") for key in model.state_dict())
    for name, param in backbone.named_parameters():
        assert param.requires_grad == name.startswith(trainable_prefixes), name


def test_freeze_and_unfreeze_backbone() -> None:
    model = build()
    model.model.freeze_backbone()
    assert not any(param.requires_grad for param in model.model.backbone.parameters())
    model.model.unfreeze_backbone()
    backbone = model.model.backbone.conv_encoder.model
    trainable = {name.split(".")[0] for name, param in backbone.named_parameters() if param.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}


def test_other_timm_cnn_backbone(pixel_inputs) -> None:
    # MobileNetV3 has five feature stages too, and timm BatchNormAct2d layers (normalisation + activation).
    frozen = build(backbone="mobilenetv3_small_050", backbone_trainable_layers=0).eval()
    assert not any(param.requires_grad for param in frozen.model.backbone.parameters())
    trainable = build(backbone="mobilenetv3_small_050", freeze_backbone_batch_norm=False, backbone_trainable_layers=5)
    assert all(param.requires_grad for param in trainable.model.backbone.parameters())
    trainable.load_state_dict(frozen.state_dict())  # same values, trainable BatchNorm (in eval mode below)
    with torch.no_grad():
        expected = trainable.eval()(**pixel_inputs).logits
        torch.testing.assert_close(frozen(**pixel_inputs).logits, expected, atol=1e-5, rtol=1e-5)


def test_batch_norm_of_frozen_stages_keeps_its_statistics_in_training(pixel_inputs) -> None:
    model = build(freeze_backbone_batch_norm=False, backbone_trainable_layers=3).train()
    backbone = model.model.backbone.conv_encoder.model
    before = {name: b.clone() for name, b in backbone.named_buffers() if "running_mean" in name}
    with torch.no_grad():
        model(**pixel_inputs)
    for name, buffer in backbone.named_buffers():
        if "running_mean" in name:
            changed = not torch.equal(before[name], buffer)
            assert changed == name.startswith(("layer2", "layer3", "layer4")), name


def test_pre_norm_runs_and_differs_from_post_norm(pixel_inputs) -> None:
    post = build().eval()
    pre = DetrCustomForObjectDetection(make_tiny_config(pre_norm=True)).eval()
    # Pre-norm adds the encoder's final LayerNorm; every other weight is shared.
    missing, unexpected = pre.load_state_dict(post.state_dict(), strict=False)
    assert missing == ["model.encoder.layernorm.weight", "model.encoder.layernorm.bias"] and not unexpected
    assert post.model.encoder.layernorm is None
    with torch.no_grad():
        post_logits, pre_logits = post(**pixel_inputs).logits, pre(**pixel_inputs).logits
    assert torch.isfinite(pre_logits).all()
    assert not torch.allclose(pre_logits, post_logits, atol=1e-3)


def test_dilation_halves_the_output_stride(pixel_inputs) -> None:
    model = build(dilation=True).eval()
    with torch.no_grad():
        outputs = model(**pixel_inputs)
    assert outputs.encoder_last_hidden_state.shape == (2, 4 * 6, 32)  # 64x96 at stride 16


def test_learned_position_embeddings_reject_too_large_feature_maps() -> None:
    model = build(position_embedding_type="learned").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 8, 4)
        with pytest.raises(ValueError, match="50x50"):
            model(torch.randn(1, 3, 32 * 51, 64))


def test_transformer_initialisation_is_xavier_as_the_original() -> None:
    model = build()
    attention = model.model.encoder.layers[0].self_attn
    stacked_bound = math.sqrt(6 / (32 + 3 * 32))
    assert attention.q_proj.weight.abs().max() <= stacked_bound
    assert attention.q_proj.weight.abs().max() > 0.9 * stacked_bound  # uniform, not a small normal
    assert attention.q_proj.bias.abs().max() == 0 and attention.out_proj.bias.abs().max() == 0
    fc1 = model.model.decoder.layers[1].fc1.weight
    assert fc1.abs().max() <= math.sqrt(6 / (32 + 64)) and fc1.abs().max() > 0.9 * math.sqrt(6 / (32 + 64))
    assert model.model.query_position_embeddings.weight.std() > 0.5  # nn.Embedding's N(0, 1)


def test_save_and_load_round_trip(model, pixel_inputs, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        before, after = model(**pixel_inputs), reloaded(**pixel_inputs)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    torch.testing.assert_close(after.pred_boxes, before.pred_boxes, rtol=0, atol=0)
    # The loss's class weights are rebuilt, not left uninitialised, when loading.
    torch.testing.assert_close(reloaded.criterion.class_weight, torch.tensor([1.0, 1.0, 1.0, 0.1]))


def test_trainable_batch_norm_checkpoint_loads_into_frozen_batch_norm_and_back(pixel_inputs, tmp_path) -> None:
    trainable = build(freeze_backbone_batch_norm=False).eval()
    trainable.save_pretrained(tmp_path / "trainable")
    frozen = DetrCustomForObjectDetection.from_pretrained(tmp_path / "trainable", freeze_backbone_batch_norm=True)
    frozen.save_pretrained(tmp_path / "frozen")
    back = DetrCustomForObjectDetection.from_pretrained(tmp_path / "frozen", freeze_backbone_batch_norm=False)
    with torch.no_grad():
        expected = trainable(**pixel_inputs).logits
        torch.testing.assert_close(frozen.eval()(**pixel_inputs).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(back.eval()(**pixel_inputs).logits, expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_gives_a_finite_float32_loss(model, pixel_inputs, detection_labels) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**pixel_inputs, labels=detection_labels)
    assert math.isfinite(outputs.loss.item())
    assert outputs.loss.dtype == torch.float32


def test_from_pretrained_never_downloads_the_backbone(tmp_path, monkeypatch) -> None:
    build().save_pretrained(tmp_path)
    requested = []
    import timm

    create_model = timm.create_model

    def recording_create_model(*args, **kwargs):
        requested.append(kwargs["pretrained"])
        return create_model(*args, **{**kwargs, "pretrained": False})

    monkeypatch.setattr(timm, "create_model", recording_create_model)
    DetrCustomForObjectDetection.from_pretrained(tmp_path, use_pretrained_backbone=True)
    DetrCustomForObjectDetection(make_tiny_config(use_pretrained_backbone=True))
    assert requested == [False, True]


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda state: state.pop("model.decoder.layers.1.fc2.weight"), "model.decoder.layers.1.fc2.weight"),
        (lambda state: state.update({"model.extra.weight": torch.zeros(2)}), "model.extra.weight"),
    ],
    ids=["missing", "unexpected"],
)
def test_loading_a_mismatched_checkpoint_fails_loudly(model, tmp_path, edit, key) -> None:
    model.save_pretrained(tmp_path)
    rewrite_weights(tmp_path, edit)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DetrCustomForObjectDetection.from_pretrained(tmp_path)


def test_checkpoint_with_another_architecture_fails_loudly(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing keys"):
        DetrCustomForObjectDetection.from_pretrained(tmp_path, pre_norm=True)


def test_detection_checkpoint_loads_into_the_bare_model(model, pixel_inputs, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    bare = DetrCustomModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = model(**pixel_inputs).last_hidden_state
        torch.testing.assert_close(bare(**pixel_inputs).last_hidden_state, expected)


def test_fine_tuning_with_new_classes_reinitialises_only_the_class_head(model, pixel_inputs, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    tuned = DetrCustomForObjectDetection.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert tuned.config.num_labels == 5
    assert tuned.class_labels_classifier.weight.shape == (6, 32)
    original = model.state_dict()
    for name, tensor in tuned.state_dict().items():
        if name.startswith("class_labels_classifier."):
            assert tensor.shape[0] == 6 and torch.isfinite(tensor).all()
        else:
            torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    outputs = tuned(**pixel_inputs, labels=make_labels((2, 1), num_labels=5))
    assert outputs.logits.shape == (2, 8, 6) and math.isfinite(outputs.loss.item())


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([{"class_labels": torch.tensor([0])}], "labels must be a list of 2"),
        ("missing_boxes", r"labels\[1\] is missing key 'boxes'"),
        ("missing_class_labels", r"labels\[1\] is missing key 'class_labels'"),
        ("boxes_shape", r"labels\[1\]\['boxes'\] must be a float tensor of shape \(1, 4\)"),
        ("float_class_labels", r"labels\[1\]\['class_labels'\] must be an int64"),
        ("class_out_of_range", r"labels\[1\]\['class_labels'\] has ids \[3\] outside \[0, 3\)"),
        ("negative_class", r"labels\[1\]\['class_labels'\] has ids \[-1\]"),
        ("absolute_boxes", r"labels\[1\]\['boxes'\] must be finite normalised"),
        ("nan_boxes", r"labels\[1\]\['boxes'\] must be finite normalised"),
    ],
)
def test_bad_labels_raise_value_error_naming_image_and_key(model, pixel_inputs, labels, message) -> None:
    good = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    bad = {
        "missing_boxes": {"class_labels": torch.tensor([1])},
        "missing_class_labels": {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
        "boxes_shape": {"class_labels": torch.tensor([1]), "boxes": torch.tensor([0.5, 0.5, 0.2, 0.2])},
        "float_class_labels": {"class_labels": torch.tensor([1.0]), "boxes": good["boxes"]},
        "class_out_of_range": {"class_labels": torch.tensor([3]), "boxes": good["boxes"]},
        "negative_class": {"class_labels": torch.tensor([-1]), "boxes": good["boxes"]},
        "absolute_boxes": {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[50.0, 40.0, 20.0, 10.0]])},
        "nan_boxes": {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, float("nan"), 0.2, 0.2]])},
    }
    if isinstance(labels, str):
        labels = [good, bad[labels]]
    with pytest.raises(ValueError, match=message):
        model(**pixel_inputs, labels=labels)


def test_fully_padded_image_is_reported(model, pixel_inputs) -> None:
    pixel_mask = pixel_inputs["pixel_mask"].clone()
    pixel_mask[1] = 0
    with pytest.raises(ValueError, match=r"pixel_mask of images \[1\]"):
        model(pixel_inputs["pixel_values"], pixel_mask=pixel_mask)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(pixel_inputs, detection_labels) -> None:
    reference = build(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0).train()
    checkpointed = build(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.encoder.layers)
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.decoder.layers)

    expected_loss = reference(**pixel_inputs, labels=detection_labels).loss
    expected_loss.backward()
    loss = checkpointed(**pixel_inputs, labels=detection_labels).loss
    loss.backward()

    torch.testing.assert_close(loss, expected_loss)
    for (name, param), (_, expected) in zip(checkpointed.named_parameters(), reference.named_parameters()):
        if expected.grad is None:
            assert param.grad is None, name
        else:
            torch.testing.assert_close(param.grad, expected.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_larger_batch_with_mixed_padding(model) -> None:
    inputs = make_pixel_inputs(batch_size=4, height=96, width=128, seed=3)
    with torch.no_grad():
        batched = model(**inputs)
        single = model(inputs["pixel_values"][2:3], pixel_mask=inputs["pixel_mask"][2:3])
    # An image's predictions do not depend on the other images of the batch.
    torch.testing.assert_close(batched.logits[2:3], single.logits, atol=1e-5, rtol=1e-5)


def test_torch_export_with_a_pixel_mask_gives_the_eager_outputs() -> None:
    model = build(seed=3).eval()

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
            return outputs.logits, outputs.pred_boxes

    padded = make_pixel_inputs()
    exported = torch.export.export(Detector(), (padded["pixel_values"], padded["pixel_mask"])).module()
    unpadded = {**padded, "pixel_mask": torch.ones_like(padded["pixel_mask"])}  # eager drops an all-ones mask
    for inputs in (padded, unpadded):
        with torch.no_grad():
            expected = Detector()(inputs["pixel_values"], inputs["pixel_mask"])
            for got, want in zip(exported(inputs["pixel_values"], inputs["pixel_mask"]), expected):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
