"""DetrCustomConfig: original-recipe defaults, DetrConfig compatibility, and the documented ValueErrors."""

import json

import pytest
import transformers

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection
from tests.conftest import TINY_CONFIG


def test_defaults_are_the_original_detr_r50_recipe() -> None:
    config = DetrCustomConfig()
    assert config.model_type == "detr_custom"
    assert config.backbone_config.backbone == "resnet50"
    assert not config.dilation
    assert config.auxiliary_loss  # transformers defaults to False; the original trains with it
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (256, 6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim, config.num_queries) == (2048, 2048, 100)
    assert (config.dropout, config.attention_dropout, config.activation_dropout) == (0.1, 0.1, 0.1)
    assert config.activation_function == "relu"
    assert config.position_embedding_type == "sine"
    assert (config.class_cost, config.bbox_cost, config.giou_cost) == (1, 5, 2)
    assert (config.bbox_loss_coefficient, config.giou_loss_coefficient, config.eos_coefficient) == (5, 2, 0.1)
    assert not config.pre_norm
    assert config.freeze_backbone_batch_norm
    assert config.backbone_trainable_layers == 3
    assert not config.use_pretrained_backbone  # building a model never downloads weights by default


def test_accepts_detr_config_arguments() -> None:
    config = DetrCustomConfig(
        backbone="resnet34",
        use_timm_backbone=True,
        dilation=True,
        position_embedding_type="learned",
        num_labels=5,
        class_cost=1.5,
        encoder_layerdrop=0.0,
    )
    assert config.backbone_config.backbone == "resnet34"
    assert config.backbone_config.output_stride == 16
    assert config.position_embedding_type == "learned"
    assert config.num_labels == 5 and len(config.id2label) == 5
    assert config.class_cost == 1.5


def test_reads_a_transformers_detr_config_json(tmp_path) -> None:
    transformers.DetrConfig(
        backbone="resnet18", use_timm_backbone=True, d_model=64, encoder_layers=3, num_queries=20, num_labels=7
    ).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "detr"

    config = DetrCustomConfig.from_pretrained(tmp_path)

    assert isinstance(config, DetrCustomConfig) and config.model_type == "detr_custom"
    assert config.backbone_config.backbone == "resnet18"
    assert (config.d_model, config.encoder_layers, config.num_queries, config.num_labels) == (64, 3, 20, 7)
    assert config.auxiliary_loss is False  # the value in the file wins over our default
    assert config.attention_dropout == 0.0


def test_reads_a_legacy_hub_config_dict() -> None:
    # The layout of facebook/detr-resnet-50's config.json: backbone name at the top level, no backbone_config.
    legacy = {
        "model_type": "detr",
        "backbone": "resnet50",
        "backbone_config": None,
        "use_timm_backbone": True,
        "use_pretrained_backbone": True,
        "dilation": False,
        "num_queries": 100,
    }
    config = DetrCustomConfig.from_dict(legacy)
    assert config.backbone_config.backbone == "resnet50"
    assert config.use_pretrained_backbone


def test_save_and_reload_round_trip(tmp_path) -> None:
    config = DetrCustomConfig(**TINY_CONFIG, pre_norm=True, backbone_trainable_layers=5, dilation=True)
    config.save_pretrained(tmp_path)
    reloaded = DetrCustomConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.pre_norm and reloaded.backbone_trainable_layers == 5


def test_transformers_detr_config_reads_ours(tmp_path) -> None:
    DetrCustomConfig(**TINY_CONFIG).save_pretrained(tmp_path)
    config = transformers.DetrConfig.from_pretrained(tmp_path)
    assert config.backbone_config.backbone == "resnet18"
    assert config.d_model == 32


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"encoder_attention_heads": 3}, "encoder_attention_heads"),
        ({"decoder_attention_heads": 5}, "decoder_attention_heads"),
        ({"class_cost": 0, "bbox_cost": 0, "giou_cost": 0}, "class_cost"),
        ({"bbox_cost": -1}, "bbox_cost"),
        ({"giou_loss_coefficient": -0.5}, "giou_loss_coefficient"),
        ({"position_embedding_type": "rope"}, "position_embedding_type"),
        ({"num_queries": 0}, "num_queries"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"decoder_layers": 0}, "decoder_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"backbone_trainable_layers": 6}, "backbone_trainable_layers"),
        ({"backbone_trainable_layers": -1}, "backbone_trainable_layers"),
        ({"eos_coefficient": 0.0}, "eos_coefficient"),
        ({"eos_coefficient": 1.5}, "eos_coefficient"),
        ({"activation_function": "swishy"}, "activation_function"),
        ({"encoder_layerdrop": 0.1}, "encoder_layerdrop"),
        ({"d_model": 30, "encoder_attention_heads": 2, "decoder_attention_heads": 2}, "d_model"),
        ({"use_timm_backbone": False}, "use_timm_backbone"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DetrCustomConfig(**{**TINY_CONFIG, **overrides})


def test_backbone_contradicting_backbone_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="backbone"):
        DetrCustomConfig(backbone="resnet50", backbone_config={"model_type": "timm_backbone", "backbone": "resnet18"})


def test_value_changed_after_construction_is_caught_when_building_a_model() -> None:
    config = DetrCustomConfig(**TINY_CONFIG)
    config.num_queries = 0
    with pytest.raises(ValueError, match="num_queries"):
        DetrCustomForObjectDetection(config)
