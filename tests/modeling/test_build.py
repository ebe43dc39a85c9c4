"""Variant registry, builders, configs and parameter counting."""

from __future__ import annotations

import pytest

from refsam.config import ModelConfig
from refsam.errors import ConfigError, UserError
from refsam.modeling import (
    VARIANTS,
    build_refsam,
    build_refsam_from_config,
    count_parameters,
    get_variant,
    text_encoder_id,
)
from refsam.modeling.text_encoder import DEFAULT_TEXT_ENCODER, resolve_text_encoder


def test_registry_matches_sam_sizes():
    assert VARIANTS["vit_b"].global_attn_indexes == (2, 5, 8, 11)
    assert VARIANTS["vit_l"].intermediate_blocks == (5, 11, 17)
    assert VARIANTS["vit_h"].intermediate_blocks == (7, 15, 23)
    tiny = VARIANTS["tiny"]
    assert len(tiny.intermediate_blocks) == 2
    assert tiny.adapter_blocks == (3, 4, 5)
    assert tiny.embedding_size == 16


def test_overrides_apply_and_unknown_fields_fail():
    assert get_variant("vit_b", img_size=512).embedding_size == 32
    with pytest.raises(ConfigError, match="unknown size field"):
        get_variant("tiny", embed_size=3)
    with pytest.raises(ConfigError, match="unknown variant"):
        get_variant("vit_x")
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        get_variant("tiny", img_size=100)


def test_build_from_config_uses_switches(text_encoder):
    cfg = ModelConfig(
        variant="tiny",
        dense_path="sentence",
        tracking=False,
        adapters=False,
        trainable=["cross_modal_mlp", "mask_decoder"],
        overrides={"img_size": 64},
    )
    model = build_refsam_from_config(cfg, text_encoder=text_encoder)
    assert model.img_size == 64
    assert model.dense is None and model.tracking is None
    assert set(model.param_groups()) == {"cross_modal_mlp", "mask_decoder"}
    assert not any("adapters" in name for name, _ in model.named_parameters())


def test_default_text_encoder_and_id(text_encoder):
    assert text_encoder.width == 384
    assert text_encoder.identifier == DEFAULT_TEXT_ENCODER
    model = build_refsam("tiny", text_encoder=text_encoder)
    assert text_encoder_id(model) == DEFAULT_TEXT_ENCODER
    # the recorded id resolves back to the packaged MiniLM directory
    assert resolve_text_encoder(DEFAULT_TEXT_ENCODER) == resolve_text_encoder(None)
    assert (resolve_text_encoder(None)[1] / "config.json").is_file()


def test_unknown_trainable_group_and_bad_text_encoder_path(tmp_path, text_encoder):
    with pytest.raises(ConfigError, match="unknown group"):
        build_refsam("tiny", text_encoder=text_encoder, trainable=["decoder"])
    with pytest.raises(UserError, match="config.json"):
        build_refsam("tiny", text_encoder=str(tmp_path))


def test_count_parameters_vit_b_close_to_paper():
    counts = count_parameters("vit_b", text_width=1024)
    trainable = sum(t for _, t in counts.values())
    assert abs(trainable - 9.9e6) / 9.9e6 < 0.10
    assert counts["image_encoder"][1] == 0 and counts["prompt_encoder"][1] == 0
    # frozen: IoU head and the 3 unused multimask hypernetworks of SAM's decoder
    total_decoder, trainable_decoder = counts["mask_decoder"]
    assert 0 < trainable_decoder < total_decoder
    assert counts["text_encoder"] == (0, 0)


def test_count_matches_a_real_build(text_encoder):
    real = build_refsam("tiny", text_encoder=text_encoder).module_parameter_counts()
    assert count_parameters("tiny", text_encoder=text_encoder) == real
