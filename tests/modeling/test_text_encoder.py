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
    batch = text_encoder._encode(TEXTS)  # one padded batch through the transformer
    for row, text in enumerate(TEXTS):
        alone = text_encoder([text])
        n = alone.lengths[0]
        assert batch.lengths[row] == n
        assert torch.allclose(batch.words[row, :n], alone.words[0], atol=1e-5)
        assert torch.allclose(batch.sentence[row], alone.sentence[0], atol=1e-5)


def test_cache_gives_each_sentence_the_same_features_whatever_its_batch(text_encoder):
    """A sentence's features are computed alone the first time and reused, so they are
    bitwise the same in any batch, first seen or not (exact resume relies on it); the
    cache is an LRU of ``cache_size`` sentences; 0 turns it off."""
    texts = ["a cat", "the big blue square moving left", "a red circle", "a cat"]
    saved, size = dict(text_encoder._cache), text_encoder.cache_size
    try:
        text_encoder._cache.clear()
        first = text_encoder(texts[1:3])  # "a cat" not seen yet
        mixed = text_encoder(texts)
        assert list(text_encoder._cache) == [  # least recently used first
            "a cat",
            "the big blue square moving left",
            "a red circle",
        ]
        assert torch.equal(mixed.sentence[1:3], first.sentence)
        assert torch.equal(mixed.words[1, : first.lengths[0]], first.words[0, : first.lengths[0]])
        assert torch.equal(mixed.words[0], mixed.words[3]) and mixed.lengths == [4, 8, 5, 4]
        assert torch.equal(mixed.mask, torch.arange(8) < torch.tensor(mixed.lengths)[:, None])
        assert torch.count_nonzero(mixed.words[0, 4:]) == 0  # padding stays 0
        uncached = text_encoder._encode(texts)
        assert torch.allclose(mixed.words, uncached.words, atol=1e-5)
        assert torch.allclose(mixed.sentence, uncached.sentence, atol=1e-5)
        text_encoder.cache_size = 2
        text_encoder(["one", "two", "three"])
        assert list(text_encoder._cache) == ["two", "three"]  # least recently used dropped
        text_encoder(["two", "four"])
        assert list(text_encoder._cache) == ["two", "four"]
        text_encoder.cache_size = 0
        text_encoder._cache.clear()
        off = text_encoder(texts)
        assert not text_encoder._cache and torch.allclose(off.words, uncached.words, atol=0)
        text_encoder.cache_size = 4
        text_encoder(texts)
        text_encoder.to(torch.float64).to(torch.float32)  # a dtype/device move empties it
        assert not text_encoder._cache
    finally:
        text_encoder.cache_size = size
        text_encoder._cache.clear()
        text_encoder._cache.update(saved)


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
