"""Frozen text encoder: shapes, attention-mask-aware pooling, padding invariance."""

from __future__ import annotations

import pytest
import torch

from refsam.errors import ConfigError
from refsam.modeling import TextEncoder

TEXTS = ["a cat", "the small green triangle moving to the right of the red square"]


def test_shapes_and_pooling_over_real_tokens(text_encoder):
    features = text_encoder(TEXTS)
    batch, length, width = features.words.shape
    assert (batch, width) == (2, 384) and features.sentence.shape == (2, 384)
    assert features.mask.dtype == torch.bool and features.mask.shape == (2, length)
    short = features.lengths[0]
    assert short < length  # "a cat" is padded
    assert torch.count_nonzero(features.words[0, short:]) == 0
    expected = features.words[0, :short].mean(dim=0)
    assert torch.allclose(features.sentence[0], expected, atol=1e-6)
    naive = features.words[0].mean(dim=0)  # averaging padding too (the authors' bug) differs
    assert not torch.allclose(features.sentence[0], naive, atol=1e-4)


def test_padded_batch_equals_each_text_alone(text_encoder):
    batch = text_encoder(TEXTS)
    for row, text in enumerate(TEXTS):
        alone = text_encoder([text])
        n = alone.lengths[0]
        assert batch.lengths[row] == n
        assert torch.allclose(batch.words[row, :n], alone.words[0], atol=1e-5)
        assert torch.allclose(batch.sentence[row], alone.sentence[0], atol=1e-5)


def test_frozen_and_always_eval(text_encoder, build_tiny):
    model = build_tiny()
    model.train()
    assert model.training and not model.text_encoder.training
    assert not model.text_encoder.model.training
    assert all(not p.requires_grad for p in model.text_encoder.parameters())
    assert not text_encoder(["x"]).words.requires_grad


def test_rejects_bad_input_and_paths(text_encoder, tmp_path):
    with pytest.raises(ValueError):
        text_encoder([])
    with pytest.raises(ValueError):
        text_encoder(["ok", 3])
    with pytest.raises(ConfigError, match="not a local model directory"):
        TextEncoder(tmp_path / "nope")


def test_t5_paths_load_the_encoder_only(tmp_path):
    """A (tiny, random) T5 checkpoint dir loads as T5EncoderModel: AutoModel would build the
    encoder-decoder and demand decoder inputs."""
    import shutil

    from transformers import T5Config, T5EncoderModel

    from refsam.modeling.text_encoder import default_text_encoder_path

    minilm = default_text_encoder_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, tmp_path / name)
    config = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    T5EncoderModel(config).save_pretrained(tmp_path)
    encoder = TextEncoder(tmp_path)
    assert isinstance(encoder.model, T5EncoderModel)
    assert encoder.width == 32 and encoder.identifier == str(tmp_path)
    features = encoder(TEXTS)
    assert features.words.shape[::2] == (2, 32) and features.sentence.shape == (2, 32)
