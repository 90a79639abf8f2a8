"""Parity with transformers' DetrForObjectDetection: same checkpoint format, same predictions, same loss.

transformers creates and saves random weights; our model loads them with no renaming. transformers runs with
`auxiliary_loss=False`: with it on, transformers applies the decoder's final LayerNorm twice (REFERENCE item 4).
"""

import pytest
import torch
import transformers
from safetensors import safe_open

from modeling_detr_custom import DetrCustomForObjectDetection
from modeling_detr_custom.testing_utils import randomize_weights_
from tests.conftest import TINY_CONFIG, make_labels, make_pixel_inputs

VARIANTS = {
    "sine": {},
    "learned": {"position_embedding_type": "learned"},
    "dilation": {"dilation": True},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request, tmp_path_factory) -> tuple[str, transformers.DetrForObjectDetection]:
    """A transformers checkpoint folder with random weights, and the transformers model that wrote it."""
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=True, auxiliary_loss=False, **TINY_CONFIG, **VARIANTS[request.param]
    )
    reference = transformers.DetrForObjectDetection(config)
    randomize_weights_(reference, seed=1)
    folder = tmp_path_factory.mktemp(f"transformers_detr_{request.param}")
    reference.save_pretrained(folder)
    return str(folder), reference.eval()


def _checkpoint_keys(folder) -> set[str]:
    with safe_open(f"{folder}/model.safetensors", "pt") as file:
        return set(file.keys())


def test_transformers_checkpoint_has_the_hub_names(checkpoint) -> None:
    keys = _checkpoint_keys(checkpoint[0])
    for key in (
        "model.backbone.conv_encoder.model.conv1.weight",
        "model.backbone.conv_encoder.model.layer1.0.bn1.running_var",
        "model.encoder.layers.0.self_attn.out_proj.weight",
        "model.encoder.layers.0.fc1.weight",
        "model.decoder.layers.1.encoder_attn.q_proj.bias",
        "model.decoder.layernorm.weight",
        "model.query_position_embeddings.weight",
        "model.input_projection.weight",
        "class_labels_classifier.weight",
        "bbox_predictor.layers.2.weight",
    ):
        assert key in keys


def test_loads_transformers_checkpoint_and_predicts_the_same(checkpoint) -> None:
    folder, reference = checkpoint
    model = DetrCustomForObjectDetection.from_pretrained(folder).eval()
    assert not model.config.auxiliary_loss  # read from the transformers config.json
    inputs = make_pixel_inputs(batch_size=3, height=96, width=128, seed=2)
    assert inputs["pixel_mask"][1:].float().mean() < 0.8  # mixed valid regions
    with torch.no_grad():
        expected, outputs = reference(**inputs), model(**inputs)
        unpadded = model(inputs["pixel_values"])
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    # The padding mask matters for these weights, so the comparison above exercises it.
    assert (unpadded.logits[1:] - outputs.logits[1:]).abs().max() > 1e-2


def test_auxiliary_loss_on_keeps_transformers_predictions_without_it(checkpoint) -> None:
    folder, reference = checkpoint
    model = DetrCustomForObjectDetection.from_pretrained(folder, auxiliary_loss=True).eval()
    inputs = make_pixel_inputs(seed=4)
    with torch.no_grad():
        expected, outputs = reference(**inputs), model(**inputs, labels=make_labels())
    torch.testing.assert_close(outputs.logits, expected.logits, atol=1e-4, rtol=0)
    assert len(outputs.auxiliary_outputs) == TINY_CONFIG["decoder_layers"] - 1


def test_same_loss_terms_as_transformers(checkpoint) -> None:
    folder, reference = checkpoint
    model = DetrCustomForObjectDetection.from_pretrained(folder).eval()
    inputs = make_pixel_inputs(batch_size=3, seed=5)
    labels = make_labels((4, 0, 2), num_labels=TINY_CONFIG["num_labels"], seed=6)
    with torch.no_grad():
        expected = reference(**inputs, labels=[dict(target) for target in labels])
        outputs = model(**inputs, labels=labels)
    for name in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error"):
        torch.testing.assert_close(outputs.loss_dict[name], expected.loss_dict[name], atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(outputs.loss, expected.loss, atol=1e-4, rtol=1e-4)


def test_our_checkpoint_has_transformers_keys_and_loads_into_transformers(checkpoint, tmp_path) -> None:
    folder, reference = checkpoint
    model = DetrCustomForObjectDetection.from_pretrained(folder).eval()
    model.save_pretrained(tmp_path)
    assert _checkpoint_keys(tmp_path) == _checkpoint_keys(folder)

    reloaded = transformers.DetrForObjectDetection.from_pretrained(tmp_path).eval()
    inputs = make_pixel_inputs(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=0)
