"""Speed paths compute what the plain model computes: BatchNorm (and ReLU) folded into the convolutions, cached
folded weights that follow every weight change, channels-last convolutions, stacked q/k projections, and
torch.compile. Each is compared with the plain computation on weights where every part matters."""

import copy
import os

import pytest
import torch
from torch import nn

from modeling_detr_custom import DetrCustomForObjectDetection
from modeling_detr_custom.model.backbone import TimmConvEncoder
from modeling_detr_custom.model.frozen_batch_norm import FrozenBatchNorm2d
from modeling_detr_custom.model.fused_conv_bn import ConvFrozenBatchNorm2d, FoldableReLU, unfold_frozen_batch_norms
from modeling_detr_custom.model.position_embedding import DetrCustomSinePositionEmbedding
from modeling_detr_custom.model.transformer import DetrCustomAttention
from tests.conftest import make_labels, make_pixel_inputs, make_tiny_config


def randomize_batch_norms_(module: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine values far from identity, so that folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, FrozenBatchNorm2d):
                norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
                norm.bias.copy_(0.2 * torch.randn(norm.bias.shape, generator=generator))
                norm.running_mean.copy_(0.2 * torch.randn(norm.running_mean.shape, generator=generator))
                norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=generator))


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy with the BatchNorms unfolded and channels-last off: the reference computation."""
    reference = copy.deepcopy(model)
    unfold_frozen_batch_norms(reference)
    for module in reference.modules():
        if isinstance(module, TimmConvEncoder):
            module.channels_last = False
    return reference


def build_model(seed: int = 0, **overrides: object) -> DetrCustomForObjectDetection:
    torch.manual_seed(seed)
    config = make_tiny_config(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **overrides)
    model = DetrCustomForObjectDetection(config)
    randomize_batch_norms_(model, seed)
    return model


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal up to float rounding: within `tolerance` of the largest magnitude of `expected`."""
    scale = max(float(expected.detach().abs().max()), 1.0)
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance * scale)


@pytest.fixture(scope="module")
def encoder() -> TimmConvEncoder:
    torch.manual_seed(0)
    encoder = TimmConvEncoder("resnet18")
    randomize_batch_norms_(encoder)
    return encoder.eval()


def test_every_conv_batch_norm_pair_and_direct_relu_is_folded(encoder) -> None:
    # resnet18: stem + 8 blocks x 2 convolutions + 3 downsample convolutions; the stem ReLU and each block's
    # first ReLU follow a BatchNorm directly (the second comes after the residual sum).
    convolutions = [module for module in encoder.modules() if isinstance(module, ConvFrozenBatchNorm2d)]
    norms = [module for module in encoder.modules() if isinstance(module, FrozenBatchNorm2d)]
    relus = [module for module in encoder.modules() if isinstance(module, FoldableReLU)]
    assert len(convolutions) == len(norms) == 20
    assert all(norm.applied_by_convolution for norm in norms)
    assert len(relus) == 9 and all(relu.applied_by_convolution for relu in relus)


# Small batches stay contiguous (channels-last measured slower below ~100k pixels), and their deep layers normalise
# the output instead of folding weights larger than it; large batches run channels-last with every weight folded.
@pytest.mark.parametrize(("shape", "channels_last"), [((2, 3, 96, 128), False), ((1, 3, 320, 352), True)])
def test_folded_backbone_equals_plain_backbone(encoder, shape, channels_last) -> None:
    pixel_values = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    reference = plain_copy(encoder)
    with torch.no_grad():
        expected = reference(pixel_values)
        folded = encoder(pixel_values)
        encoder.channels_last = False
        folded_contiguous = encoder(pixel_values)
        encoder.channels_last = True
    assert folded.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert folded_contiguous.is_contiguous()
    assert_close_relative(folded, expected)
    assert_close_relative(folded_contiguous, expected)


def test_checkpoint_names_and_values_are_those_of_the_plain_model(encoder) -> None:
    reference = plain_copy(encoder)
    state, expected = encoder.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)


def test_unfolding_restores_plain_modules(encoder) -> None:
    reference = plain_copy(encoder)
    assert not any(isinstance(module, ConvFrozenBatchNorm2d) for module in reference.modules())
    assert not any(getattr(module, "applied_by_convolution", False) for module in reference.modules())
    # The original is untouched by unfolding its copy.
    assert all(norm.applied_by_convolution for norm in encoder.modules() if isinstance(norm, FrozenBatchNorm2d))


@pytest.mark.parametrize("size", [(16, 16), (96, 96)])  # normalised after the convolution / folded into it
def test_folded_convolution_in_training_gives_the_plain_output_and_gradients(size) -> None:
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(16, 32, 3, padding=1, bias=False), FrozenBatchNorm2d(32)
    randomize_batch_norms_(norm)
    relu = FoldableReLU()
    folded = ConvFrozenBatchNorm2d.from_conv(copy.deepcopy(conv), copy.deepcopy(norm), relu)
    inputs = torch.randn(2, 16, *size, requires_grad=True)
    expected = torch.relu(norm(conv(inputs)))
    expected.square().sum().backward()
    expected_grads = (inputs.grad.clone(), conv.weight.grad.clone())
    inputs.grad = None
    output = relu(folded.frozen_batch_norm(folded(inputs)))  # the BatchNorm and ReLU modules now pass through
    output.square().sum().backward()
    assert_close_relative(output, expected)
    assert_close_relative(inputs.grad, expected_grads[0])
    assert_close_relative(folded.weight.grad, expected_grads[1])


def test_training_step_matches_the_plain_model_and_later_inference_uses_the_updated_weights() -> None:
    model = build_model(backbone_trainable_layers=5)
    reference = plain_copy(model)
    inputs, labels = make_pixel_inputs(), make_labels()
    with torch.no_grad():  # fills the folded-weight caches before training
        assert_close_relative(model.eval()(**inputs).logits, reference.eval()(**inputs).logits)
    losses = []
    for candidate in (model, reference):
        outputs = candidate.train()(**inputs, labels=labels)
        outputs.loss.backward()
        losses.append(outputs.loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    expected_grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        assert (param.grad is None) == (expected_grads[name].grad is None), name
        if param.grad is not None:
            assert_close_relative(param.grad, expected_grads[name].grad, 1e-4)
    for candidate in (model, reference):
        torch.optim.SGD(candidate.parameters(), lr=0.05).step()
    with torch.no_grad():
        updated, expected = model.eval()(**inputs).logits, reference.eval()(**inputs).logits
    assert_close_relative(updated, expected, 1e-4)


def test_cached_fold_follows_in_place_updates_and_loaded_weights(encoder) -> None:
    folded, reference = copy.deepcopy(encoder), plain_copy(encoder)
    pixel_values = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = folded(pixel_values)
        # Cached where the weight is smaller than the output, recomputed at each call for deeper layers.
        assert folded.model.layer1[0].conv1._folded_cache is not None
        assert folded.model.layer1[1].conv2._folded_cache is not None
        assert folded.model.layer4[0].conv2._folded_cache is None
        for model in (folded, reference):  # in-place weight and statistics updates, cached and recomputed folds
            model.model.layer1[0].conv1.weight.mul_(1.5)
            model.model.layer1[1].bn2.running_var.add_(1.0)
            model.model.layer4[0].bn2.running_var.add_(1.0)
        after = folded(pixel_values)
        assert_close_relative(after, reference(pixel_values))
        assert (after - before).abs().max() > 1e-3
        other = TimmConvEncoder("resnet18")
        randomize_batch_norms_(other, seed=5)
        folded.load_state_dict(other.state_dict())
        reference.load_state_dict(other.state_dict())
        assert_close_relative(folded(pixel_values), reference(pixel_values))
        folded.to(torch.float64)
        assert folded(pixel_values.double()).dtype == torch.float64


def test_stacked_query_key_projection_equals_separate_projections() -> None:
    torch.manual_seed(0)
    attention = DetrCustomAttention(32, 4)
    hidden_states = torch.randn(2, 10, 32)
    with torch.no_grad():
        fused = attention(hidden_states, hidden_states, hidden_states)[0]  # one stacked product, cached
        separate = attention(hidden_states, hidden_states.clone(), hidden_states)[0]  # two products
        assert_close_relative(fused, separate)
        attention.k_proj.weight.mul_(2.0)  # the cached stack must follow
        assert_close_relative(
            attention(hidden_states, hidden_states, hidden_states)[0],
            attention(hidden_states, hidden_states.clone(), hidden_states)[0],
        )
    attention(hidden_states, hidden_states, hidden_states)[0].sum().backward()
    assert attention.q_proj.weight.grad is not None and attention.k_proj.weight.grad is not None
    assert not any("stack" in key for key in attention.state_dict())


def test_unpadded_sine_positions_are_computed_once_per_shape() -> None:
    embedding = DetrCustomSinePositionEmbedding(16)
    feature_map = torch.zeros(2, 8, 5, 7)
    all_valid = torch.ones(2, 5, 7, dtype=torch.bool)
    first = embedding(feature_map)
    assert embedding(feature_map) is first  # cached
    torch.testing.assert_close(first, embedding(feature_map, all_valid), rtol=0, atol=0)
    other_shape = embedding(torch.zeros(2, 8, 6, 7))
    assert other_shape.shape == (2, 42, 32)
    torch.testing.assert_close(other_shape, embedding(torch.zeros(2, 8, 6, 7), torch.ones(2, 6, 7, dtype=torch.bool)))


def test_from_pretrained_keeps_the_frozen_backbone_stages_frozen(tmp_path) -> None:
    # transformers re-creates every parameter while loading; the configured freezing must survive it.
    build_model().save_pretrained(tmp_path)
    loaded = DetrCustomForObjectDetection.from_pretrained(tmp_path)
    backbone = "model.backbone.conv_encoder.model."
    for name, param in loaded.named_parameters():
        frozen = name.startswith((backbone + "conv1", backbone + "layer1"))
        assert param.requires_grad == (not frozen), name


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    model = build_model().eval()
    inputs = make_pixel_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    assert_close_relative(logits.float(), expected, 0.1)


def test_torch_compile_traces_inference_and_a_training_step() -> None:
    # aot_eager runs Dynamo and AOTAutograd (the tracing that can break) without generating C++ kernels, which
    # would take minutes on a CPU; the inductor run is `test_torch_compile_inductor`.
    model = build_model()
    inputs, labels = make_pixel_inputs(), make_labels()
    compiled = torch.compile(copy.deepcopy(model), backend="aot_eager")
    with torch.no_grad():
        assert_close_relative(compiled.eval()(**inputs).logits, model.eval()(**inputs).logits)
    loss = compiled.train()(**inputs, labels=labels).loss
    loss.backward()
    expected = model.train()(**inputs, labels=labels).loss
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    os.environ.get("RUN_INDUCTOR_TESTS") != "1",
    reason="inductor compiles C++ kernels for minutes on a CPU; set RUN_INDUCTOR_TESTS=1 (make bench measures it)",
)
def test_torch_compile_inductor() -> None:
    model = build_model().eval()
    inputs = make_pixel_inputs()
    with torch.no_grad():
        assert_close_relative(torch.compile(model)(**inputs).logits, model(**inputs).logits, 1e-4)
