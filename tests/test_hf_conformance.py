"""Conformance with transformers' DETR classes, side by side: same config, same weights, same inputs.

transformers writes a tiny random-weight checkpoint; our classes load it with no renaming. Everything a user or a
tool touches is compared: `forward` signatures, output fields and tuples, hidden states and attentions, the
`inputs_embeds` / `encoder_outputs` / `decoder_inputs_embeds` paths, gradient checkpointing, saving and loading
across the bare model and the detection head, sharded checkpoints, `dtype` and `device_map` loading. Numbers are
compared with `auxiliary_loss=False`: with it on, transformers applies the decoder's final LayerNorm twice
(REFERENCE item 4), a deliberate difference.
"""

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers.modeling_outputs import BaseModelOutput
from transformers.testing_utils import CaptureLogger

from modeling_detr_custom import (
    DetrCustomForObjectDetection,
    DetrCustomModel,
    DetrCustomModelOutput,
    DetrCustomObjectDetectionOutput,
)
from modeling_detr_custom.testing_utils import randomize_weights_
from tests.conftest import TINY_CONFIG, make_labels, make_pixel_inputs, rewrite_weights

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
PAIRS = [
    (DetrCustomModel, transformers.DetrModel),
    (DetrCustomForObjectDetection, transformers.DetrForObjectDetection),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A transformers `DetrForObjectDetection` checkpoint with random weights (timm resnet18, d_model 32)."""
    torch.manual_seed(0)
    config = transformers.DetrConfig(use_timm_backbone=True, auxiliary_loss=False, **TINY_CONFIG, **NO_DROPOUT)
    reference = transformers.DetrForObjectDetection(config)
    randomize_weights_(reference, seed=1)
    path = tmp_path_factory.mktemp("transformers_detr")
    reference.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(folder):
    """(ours, transformers') detection models with the same weights, in eval mode."""
    ours = DetrCustomForObjectDetection.from_pretrained(folder).eval()
    # transformers' SDPA attention returns no attention weights; its eager attention does.
    theirs = transformers.DetrForObjectDetection.from_pretrained(folder, attn_implementation="eager").eval()
    return ours, theirs


def _assert_same_structure(ours, theirs, atol: float = 1e-4, values: bool = True, where: str = "output") -> None:
    """Recursively: same types of containers, same lengths, tensors of the same shape (and values)."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), where
        assert ours.shape == theirs.shape, where
        if values:
            torch.testing.assert_close(ours, theirs, atol=atol, rtol=0, msg=where)
    elif isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs), where
        for index, (mine, reference) in enumerate(zip(ours, theirs)):
            _assert_same_structure(mine, reference, atol, values, f"{where}[{index}]")
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), where
        for key in theirs:
            _assert_same_structure(ours[key], theirs[key], atol, values, f"{where}[{key!r}]")
    else:
        assert ours == theirs, where


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["model", "object_detection"])
def test_forward_signature_extends_transformers(ours, theirs) -> None:
    our_parameters = list(inspect.signature(ours.forward).parameters.values())
    their_parameters = [
        parameter
        for parameter in inspect.signature(theirs.forward).parameters.values()
        if parameter.kind is not parameter.VAR_KEYWORD
    ]
    # transformers' named arguments come first, in its order, with its defaults; ours follow; **kwargs last.
    for mine, reference in zip(our_parameters, their_parameters):
        assert (mine.name, mine.kind, mine.default) == (reference.name, reference.kind, reference.default)
    assert our_parameters[-1].kind is inspect.Parameter.VAR_KEYWORD
    named = [parameter.name for parameter in our_parameters[:-1]]
    assert named[len(their_parameters) :] == ["output_attentions", "output_hidden_states", "return_dict"]


def test_labels_is_the_seventh_argument() -> None:
    names = list(inspect.signature(DetrCustomForObjectDetection.forward).parameters)
    assert names.index("labels") == 7  # after self
    assert names.index("labels") == list(
        inspect.signature(transformers.DetrForObjectDetection.forward).parameters
    ).index("labels")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (DetrCustomModelOutput, transformers.models.detr.modeling_detr.DetrModelOutput),
        (DetrCustomObjectDetectionOutput, transformers.models.detr.modeling_detr.DetrObjectDetectionOutput),
    ],
)
def test_output_fields_in_transformers_order(ours, theirs) -> None:
    our_fields = [field.name for field in dataclasses.fields(ours)]
    their_fields = [field.name for field in dataclasses.fields(theirs)]
    assert our_fields[: len(their_fields)] == their_fields
    assert issubclass(ours, theirs)  # code that checks isinstance against transformers' outputs accepts ours


@pytest.mark.parametrize("return_dict", [True, False])
def test_detection_outputs_hidden_states_and_attentions_match(pair, return_dict) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=3)
    options = {"output_hidden_states": True, "output_attentions": True, "return_dict": return_dict}
    with torch.no_grad():
        expected, outputs = theirs(**inputs, **options), ours(**inputs, **options)
    if return_dict:
        assert list(outputs.keys()) == list(expected.keys())
        expected, outputs = expected.to_tuple(), outputs.to_tuple()
    _assert_same_structure(outputs, expected)


def test_bare_model_tuple_with_intermediate_states_in_transformers_order(folder) -> None:
    # With auxiliary_loss the values differ on purpose (transformers normalises twice); positions and shapes agree.
    ours = DetrCustomModel.from_pretrained(folder, auxiliary_loss=True).eval()
    theirs = transformers.DetrModel.from_pretrained(folder, auxiliary_loss=True).eval()
    inputs = make_pixel_inputs(seed=4)
    with torch.no_grad():
        expected = theirs(**inputs, output_hidden_states=True, return_dict=False)
        outputs = ours(**inputs, output_hidden_states=True, return_dict=False)
    _assert_same_structure(outputs, expected, values=False)
    assert outputs[-1].shape == (TINY_CONFIG["decoder_layers"], 2, TINY_CONFIG["num_queries"], TINY_CONFIG["d_model"])
    # (last_hidden_state, decoder_hidden_states, encoder_last_hidden_state, encoder_hidden_states, intermediate):
    # the encoder's entries have the same values.
    _assert_same_structure(outputs[2:4], expected[2:4])


def test_inputs_embeds_path_matches(pair) -> None:
    ours, theirs = pair
    generator = torch.Generator().manual_seed(5)
    inputs_embeds = torch.randn(2, 16, TINY_CONFIG["d_model"], generator=generator)
    pixel_mask = torch.ones(2, 64, 64, dtype=torch.int64)
    pixel_mask[1, 40:] = 0
    with torch.no_grad():
        expected = theirs(None, inputs_embeds=inputs_embeds)
        outputs = ours(None, inputs_embeds=inputs_embeds)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)


def test_inputs_embeds_with_a_pixel_mask_equal_the_pixel_path(pair) -> None:
    # Deliberate difference: transformers ignores the mask in the position embeddings of this path; ours computes
    # them over the valid region as on the pixel path, so the projected features give the pixel path's result.
    ours, _ = pair
    inputs = make_pixel_inputs(height=128, width=128, seed=19)  # a square 4 x 4 feature map
    with torch.no_grad():
        feature_map, _ = ours.model.backbone(inputs["pixel_values"], None)
        inputs_embeds = ours.model.input_projection(feature_map).flatten(2).transpose(1, 2)
        expected = ours(**inputs)
        outputs = ours(None, pixel_mask=inputs["pixel_mask"], inputs_embeds=inputs_embeds)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-5, rtol=0)


def test_inputs_embeds_errors_name_the_problem(pair) -> None:
    ours, _ = pair
    with pytest.raises(ValueError, match="square number"):
        ours(None, inputs_embeds=torch.randn(1, 15, TINY_CONFIG["d_model"]))
    with pytest.raises(ValueError, match="pixel_values or inputs_embeds"):
        ours(None)


def test_encoder_outputs_are_reused(pair) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=6)
    with torch.no_grad():
        first = ours(**inputs)
        # Reuse shifted encoder states: the result must follow them (the encoder is skipped).
        encoder_outputs = BaseModelOutput(last_hidden_state=first.encoder_last_hidden_state + 0.5)
        expected = theirs(**inputs, encoder_outputs=encoder_outputs)
        outputs = ours(**inputs, encoder_outputs=encoder_outputs)
        as_tuple = ours(**inputs, encoder_outputs=(encoder_outputs.last_hidden_state,))
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(as_tuple.logits, outputs.logits)
    assert (outputs.logits - first.logits).abs().max() > 1e-3
    with pytest.raises(ValueError, match="encoder_outputs.last_hidden_state has shape"):
        ours(**inputs, encoder_outputs=(encoder_outputs.last_hidden_state[:, :3],))


def test_decoder_inputs_embeds_and_attention_mask_match(pair) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=7)
    generator = torch.Generator().manual_seed(8)
    decoder_inputs_embeds = torch.randn(2, TINY_CONFIG["num_queries"], TINY_CONFIG["d_model"], generator=generator)
    decoder_attention_mask = torch.ones(2, TINY_CONFIG["num_queries"], dtype=torch.int64)
    decoder_attention_mask[1, 5:] = 0
    options = {"decoder_inputs_embeds": decoder_inputs_embeds, "decoder_attention_mask": decoder_attention_mask}
    with torch.no_grad():
        expected, outputs = theirs(**inputs, **options), ours(**inputs, **options)
        plain = ours(**inputs)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    assert (outputs.logits - plain.logits).abs().max() > 1e-3
    with pytest.raises(ValueError, match="decoder_attention_mask must have shape"):
        ours(**inputs, decoder_attention_mask=decoder_attention_mask[:, :3])


def test_extra_keyword_arguments_are_ignored_as_in_transformers(pair) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=9)
    extra = {"decoder_input_ids": torch.zeros(2, 3, dtype=torch.int64)}
    with torch.no_grad():
        expected, outputs = theirs(**inputs, **extra), ours(**inputs, **extra)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)


def test_positional_labels_as_transformers(pair) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=10)
    labels = make_labels((2, 1), num_labels=TINY_CONFIG["num_labels"], seed=11)
    with torch.no_grad():
        expected = theirs(inputs["pixel_values"], inputs["pixel_mask"], None, None, None, None, labels)
        outputs = ours(inputs["pixel_values"], inputs["pixel_mask"], None, None, None, None, labels)
    torch.testing.assert_close(outputs.loss, expected.loss, atol=1e-4, rtol=1e-4)


def test_gradient_checkpointing_as_transformers(folder) -> None:
    inputs = make_pixel_inputs(seed=12)
    labels = make_labels((3, 1), num_labels=TINY_CONFIG["num_labels"], seed=13)
    losses, gradients = {}, {}
    for name, cls in (("ours", DetrCustomForObjectDetection), ("theirs", transformers.DetrForObjectDetection)):
        for checkpointing in (False, True):
            model = cls.from_pretrained(folder).train()
            assert model.supports_gradient_checkpointing
            if checkpointing:
                model.gradient_checkpointing_enable()
                assert model.is_gradient_checkpointing
            loss = model(**inputs, labels=[dict(target) for target in labels]).loss
            loss.backward()
            losses[name, checkpointing] = loss.detach()
            gradients[name, checkpointing] = model.model.input_projection.weight.grad
    for checkpointing in (False, True):
        torch.testing.assert_close(losses["ours", checkpointing], losses["theirs", False], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gradients["ours", checkpointing], gradients["theirs", False], atol=1e-4, rtol=1e-3)


def test_bare_checkpoint_loads_into_the_detection_head_as_in_transformers(folder, tmp_path) -> None:
    transformers.DetrModel.from_pretrained(folder).save_pretrained(tmp_path)
    inputs = make_pixel_inputs(seed=14)
    reports, models, logs = {}, {}, {}
    for name, cls in (("ours", DetrCustomForObjectDetection), ("theirs", transformers.DetrForObjectDetection)):
        with CaptureLogger(transformers.utils.logging.get_logger("transformers.modeling_utils")) as captured:
            models[name], info = cls.from_pretrained(tmp_path, output_loading_info=True)
        reports[name], logs[name] = sorted(info["missing_keys"]), captured.out
    assert reports["ours"] == reports["theirs"]
    # transformers' load report names the newly initialised head for both.
    assert "LOAD REPORT" in logs["ours"] and "class_labels_classifier.weight" in logs["ours"]
    assert reports["ours"] and all(
        key.startswith(("class_labels_classifier.", "bbox_predictor.")) for key in reports["ours"]
    )
    with torch.no_grad():
        for name in models:
            models[name].eval()
        expected = models["theirs"](**inputs).last_hidden_state
        outputs = models["ours"](**inputs)
    torch.testing.assert_close(outputs.last_hidden_state, expected, atol=1e-4, rtol=0)
    assert torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.pred_boxes).all()


def test_detection_checkpoint_loads_into_the_bare_model_as_in_transformers(pair, folder) -> None:
    inputs = make_pixel_inputs(seed=15)
    ours, info = DetrCustomModel.from_pretrained(folder, output_loading_info=True)
    theirs = transformers.DetrModel.from_pretrained(folder)
    assert not info["missing_keys"]
    with torch.no_grad():
        torch.testing.assert_close(
            ours.eval()(**inputs).last_hidden_state, theirs.eval()(**inputs).last_hidden_state, atol=1e-4, rtol=0
        )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda state: state.pop("model.encoder.layers.1.fc1.weight"),
            r"missing keys \(1\): model\.encoder\.layers\.1",
        ),
        (
            lambda state: state.pop("model.backbone.conv_encoder.model.layer2.0.conv1.weight"),
            r"missing keys \(1\): model\.backbone\.conv_encoder\.model\.layer2\.0\.conv1\.weight",
        ),
        (
            lambda state: state.update({"model.decoder.layers.7.fc1.weight": torch.zeros(2)}),
            r"unexpected keys \(1\): model\.decoder\.layers\.7\.fc1\.weight",
        ),
    ],
    ids=["missing-transformer", "missing-backbone", "unexpected-transformer"],
)
def test_missing_backbone_or_transformer_weights_raise_unless_allowed(pair, tmp_path, edit, message) -> None:
    pair[0].save_pretrained(tmp_path)
    rewrite_weights(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        DetrCustomForObjectDetection.from_pretrained(tmp_path)
    model, info = DetrCustomForObjectDetection.from_pretrained(
        tmp_path, allow_partial_base_weights=True, output_loading_info=True
    )
    assert info["missing_keys"] or info["unexpected_keys"]


def test_mismatched_sizes_raise_in_the_transformer_but_not_in_the_heads(folder) -> None:
    tuned, info = DetrCustomForObjectDetection.from_pretrained(
        folder, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    _, their_info = transformers.DetrForObjectDetection.from_pretrained(
        folder, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert sorted(key for key, *_ in info["mismatched_keys"]) == sorted(
        key for key, *_ in their_info["mismatched_keys"]
    )
    assert tuned.class_labels_classifier.weight.shape == (6, TINY_CONFIG["d_model"])
    with pytest.raises(
        ValueError, match=r"mismatched keys \(\d+\): model\.decoder\.layers\.0\.fc1\.bias \(64,\) -> \(128,\)"
    ):
        DetrCustomForObjectDetection.from_pretrained(folder, decoder_ffn_dim=128, ignore_mismatched_sizes=True)
    model = DetrCustomForObjectDetection.from_pretrained(
        folder, decoder_ffn_dim=128, ignore_mismatched_sizes=True, allow_partial_base_weights=True
    )
    assert model.model.decoder.layers[0].fc1.weight.shape == (128, TINY_CONFIG["d_model"])


def test_sharded_checkpoint_round_trip_in_both_directions(pair, tmp_path) -> None:
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=16)
    ours.save_pretrained(tmp_path / "ours", max_shard_size="1MB")
    theirs.save_pretrained(tmp_path / "theirs", max_shard_size="1MB")
    for name in ("ours", "theirs"):
        index = json.loads((tmp_path / name / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    with torch.no_grad():
        expected = theirs(**inputs).logits
        for name in ("ours", "theirs"):
            for cls in (DetrCustomForObjectDetection, transformers.DetrForObjectDetection):
                reloaded = cls.from_pretrained(tmp_path / name).eval()
                torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-4, rtol=0, msg=name)


@pytest.mark.parametrize("argument", ["dtype", "torch_dtype"])  # torch_dtype: the older name transformers accepts
def test_dtype_loading_as_transformers(folder, argument) -> None:
    inputs = make_pixel_inputs(seed=17)
    ours = DetrCustomForObjectDetection.from_pretrained(folder, **{argument: torch.bfloat16}).eval()
    theirs = transformers.DetrForObjectDetection.from_pretrained(folder, **{argument: torch.bfloat16}).eval()
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert {parameter.dtype for parameter in ours.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        pixel_values = inputs["pixel_values"].to(torch.bfloat16)
        outputs = ours(pixel_values, pixel_mask=inputs["pixel_mask"])
        expected = theirs(pixel_values, pixel_mask=inputs["pixel_mask"])
    assert outputs.logits.dtype == expected.logits.dtype == torch.bfloat16
    torch.testing.assert_close(outputs.pred_boxes.float(), expected.pred_boxes.float(), atol=0.1, rtol=0)


def test_device_map_cpu(pair, folder) -> None:
    inputs = make_pixel_inputs(seed=18)
    model = DetrCustomForObjectDetection.from_pretrained(folder, device_map="cpu").eval()
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, pair[1](**inputs).logits, atol=1e-4, rtol=0)


# A tiny transformers ResNet (use_timm_backbone=False): basic blocks, one per stage, 8-32 channels.
TINY_RESNET = {
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 16, 32],
    "depths": [1, 1, 1, 1],
    "layer_type": "basic",
    "out_features": ["stage4"],
}
TINY_TRANSFORMER = {key: value for key, value in TINY_CONFIG.items() if key != "backbone"}


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory):
    """A transformers DETR checkpoint with a transformers `ResNetBackbone` (as the `no_timm` Hub revision)."""
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        backbone_config=transformers.ResNetConfig(**TINY_RESNET),
        auxiliary_loss=False,
        **TINY_TRANSFORMER,
    )
    reference = transformers.DetrForObjectDetection(config)
    randomize_weights_(reference, seed=2)
    path = tmp_path_factory.mktemp("transformers_detr_resnet")
    reference.save_pretrained(path)
    return path


def test_transformers_backbone_checkpoint_loads_and_predicts_the_same(resnet_folder, tmp_path) -> None:
    ours = DetrCustomForObjectDetection.from_pretrained(resnet_folder).eval()
    theirs = transformers.DetrForObjectDetection.from_pretrained(resnet_folder).eval()
    assert isinstance(ours.config.backbone_config, transformers.ResNetConfig)
    inputs = make_pixel_inputs(batch_size=3, seed=20)
    with torch.no_grad():
        expected, outputs = theirs(**inputs), ours(**inputs)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    # Our checkpoint has transformers' names and loads back into transformers with the same predictions.
    ours.save_pretrained(tmp_path)
    assert load_file(tmp_path / "model.safetensors").keys() == load_file(resnet_folder / "model.safetensors").keys()
    reloaded = transformers.DetrForObjectDetection.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected.logits, atol=1e-4, rtol=0)


def test_transformers_backbone_built_directly_has_transformers_names_frozen_batch_norm_and_stages() -> None:
    from modeling_detr_custom import DetrCustomConfig
    from modeling_detr_custom.model.frozen_batch_norm import FrozenBatchNorm2d

    config = DetrCustomConfig(
        use_timm_backbone=False, backbone_config=transformers.ResNetConfig(**TINY_RESNET), **TINY_TRANSFORMER
    )
    ours = DetrCustomForObjectDetection(config)
    theirs = transformers.DetrForObjectDetection(
        transformers.DetrConfig(
            use_timm_backbone=False, backbone_config=transformers.ResNetConfig(**TINY_RESNET), **TINY_TRANSFORMER
        )
    )
    # transformers' in-memory `backbone.model.*` is `backbone.conv_encoder.model.*` in its checkpoints and here.
    our_names = {f"backbone.{name}" for name, _ in ours.model.backbone.state_dict().items()}
    their_names = {
        name.replace("backbone.model.", "backbone.conv_encoder.model.", 1)
        for name in theirs.model.state_dict()
        if name.startswith("backbone.")
    }
    assert our_names == their_names and len(our_names) > 20
    backbone = ours.model.backbone.conv_encoder.model
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in backbone.modules())
    assert any(isinstance(module, FrozenBatchNorm2d) for module in backbone.modules())
    # The original recipe (backbone_trainable_layers=3): stem and stage 1 frozen, stages 2-4 trained.
    trainable = {name for name, parameter in backbone.named_parameters() if parameter.requires_grad}
    assert trainable and all(
        name.startswith(("encoder.stages.1.", "encoder.stages.2.", "encoder.stages.3.")) for name in trainable
    )
    assert any(name.startswith("encoder.stages.1.") for name in trainable)
    ours.model.freeze_backbone()
    assert not any(parameter.requires_grad for parameter in backbone.parameters())
    ours.model.unfreeze_backbone()
    assert {name for name, parameter in backbone.named_parameters() if parameter.requires_grad} == trainable


def test_transformers_backbone_config_errors_name_the_problem() -> None:
    from modeling_detr_custom import DetrCustomConfig

    with pytest.raises(ValueError, match="dilation=True"):
        DetrCustomConfig(
            use_timm_backbone=False, backbone_config=transformers.ResNetConfig(**TINY_RESNET), dilation=True
        )
    with pytest.raises(ValueError, match="Pass backbone_config"):
        DetrCustomConfig(use_timm_backbone=False, backbone="microsoft/resnet-50")
    assert isinstance(DetrCustomConfig(use_timm_backbone=False).backbone_config, transformers.ResNetConfig)
    # A name next to a backbone_config (older transformers configs): the backbone_config decides.
    named = DetrCustomConfig(
        use_timm_backbone=False, backbone="resnet50", backbone_config=transformers.ResNetConfig(**TINY_RESNET)
    )
    assert named.backbone_config.hidden_sizes == TINY_RESNET["hidden_sizes"]


# ---------------------------------------------------------------------------------------------------------------
# Image processor: the call options of transformers' DetrImageProcessor, side by side
# ---------------------------------------------------------------------------------------------------------------
PROCESSOR_SIZE = {"shortest_edge": 32, "longest_edge": 48}


@pytest.fixture(scope="module")
def processors():
    from image_processing import DetrCustomImageProcessor

    return DetrCustomImageProcessor(size=PROCESSOR_SIZE), transformers.DetrImageProcessor(size=PROCESSOR_SIZE)


def _random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _compare(ours, theirs, images, atol: float = 1e-5, **options) -> dict:
    outputs = ours(images, **options)
    expected = theirs(images, return_tensors="pt", **options)
    for key in expected.keys():  # transformers leaves pixel_mask out with do_pad=False; ours has all ones then
        assert outputs[key].shape == expected[key].shape, key
        torch.testing.assert_close(outputs[key].to(expected[key].dtype), expected[key], atol=atol, rtol=0, msg=key)
    return outputs


def test_processor_input_data_format_as_transformers(processors) -> None:
    # (4, 6, 3) channels-last: ambiguous without the option only in general; (3, 8, 3) is ambiguous outright.
    for shape in ((20, 30, 3), (3, 8, 3)):
        image = torch.from_numpy(_random_image(shape, seed=1))
        outputs = _compare(*processors, image, input_data_format="channels_last")
        assert outputs["pixel_values"].shape[1] == 3
    channels_first = torch.from_numpy(_random_image((3, 20, 30), seed=2))
    _compare(*processors, channels_first, input_data_format="channels_first")


def test_processor_do_convert_rgb_composites_transparency_as_transformers(processors) -> None:
    import PIL.Image

    image = PIL.Image.fromarray(_random_image((20, 30, 4), seed=3), "RGBA")
    converted = _compare(*processors, image, do_convert_rgb=True)
    dropped = processors[0](image)  # default: the alpha channel is dropped (README: a deliberate difference)
    assert (converted["pixel_values"] - dropped["pixel_values"]).abs().max() > 0.1
    rgba_tensor = torch.from_numpy(_random_image((4, 20, 30), seed=4))
    from_tensor = processors[0](rgba_tensor, do_convert_rgb=True)["pixel_values"]
    from_pil = processors[0](PIL.Image.fromarray(rgba_tensor.permute(1, 2, 0).numpy(), "RGBA"), do_convert_rgb=True)
    torch.testing.assert_close(from_tensor, from_pil["pixel_values"], atol=1e-5, rtol=0)


def test_processor_four_channels_with_four_means_as_transformers(processors) -> None:
    image = _random_image((20, 30, 4), seed=5)
    mean, std = [0.5, 0.4, 0.3, 0.2], [0.2, 0.3, 0.4, 0.5]
    outputs = _compare(*processors, image, image_mean=mean, image_std=std, input_data_format="channels_last")
    assert outputs["pixel_values"].shape[1] == 4
    with pytest.raises(ValueError, match="has 3 channels .* image_mean/image_std have 4 values"):
        processors[0](_random_image((20, 30, 3)), image_mean=mean, image_std=std)
    with pytest.raises(ValueError, match="image_std"):
        processors[0](image, image_mean=mean, image_std=[0.2, 0.3, 0.4])


def test_processor_pad_size_and_do_pad_per_call_as_transformers(processors) -> None:
    images = [torch.from_numpy(_random_image((3, 20, 30), seed=6)), torch.from_numpy(_random_image((3, 30, 20)))]
    padded = _compare(*processors, images, pad_size={"height": 60, "width": 60})
    assert padded["pixel_values"].shape[-2:] == (60, 60)
    single = torch.from_numpy(_random_image((3, 20, 30), seed=7))
    unpadded = _compare(*processors, single, do_pad=False)
    assert unpadded["pixel_mask"].shape == unpadded["pixel_values"].shape[:1] + unpadded["pixel_values"].shape[2:]
    assert unpadded["pixel_mask"].all()


def test_processor_invalid_format_raises_at_call_time_as_transformers(processors) -> None:
    from image_processing import DetrCustomImageProcessor

    ours, theirs = processors
    image = _random_image((20, 30, 3))
    for processor in (ours, theirs):
        with pytest.raises(ValueError, match="not a valid"):
            processor(image, format="coco_instances", return_tensors="pt")
    built = DetrCustomImageProcessor(format="not_a_format")  # as transformers: accepted here, rejected at the call
    with pytest.raises(ValueError, match="not a valid annotation format"):
        built(image)
    with pytest.raises(ValueError, match="needs masks_path"):
        ours(image, [{"image_id": 1, "file_name": "1.png", "segments_info": []}], format="coco_panoptic")
    torch.testing.assert_close(ours(image, format="coco_detection")["pixel_values"], ours(image)["pixel_values"])


def test_processor_data_format_channels_last(processors) -> None:
    image = _random_image((20, 30, 3), seed=8)
    first = processors[0](image)["pixel_values"]
    last = processors[0](image, data_format="channels_last")["pixel_values"]
    torch.testing.assert_close(last, first.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="data_format"):
        processors[0](image, data_format="nchw")


def test_torch_export_of_the_model_itself_with_a_pixel_mask_matches_transformers(pair) -> None:
    # As tools call it: the model itself, keyword inputs from the image processor, a ModelOutput back.
    ours, theirs = pair
    inputs = make_pixel_inputs(seed=21)
    exported = torch.export.export(ours, args=(), kwargs=dict(inputs)).module()
    with torch.no_grad():
        expected = theirs(**inputs)
        outputs = exported(**inputs)
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
