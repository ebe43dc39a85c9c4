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


def test_t5_folder_as_the_hub_ships_it_loads_its_sentencepiece_tokenizer(hub_style_t5):
    """t5-3b's folder has spiece.model; without tokenizer.json the tokenizer is converted
    with sentencepiece (a pinned dependency): without it transformers fails obscurely."""
    from transformers import T5EncoderModel

    assert not (hub_style_t5 / "tokenizer.json").exists()
    encoder = TextEncoder(hub_style_t5)
    assert isinstance(encoder.model, T5EncoderModel) and encoder.width == 32
    features = encoder(TEXTS)
    assert features.sentence.shape == (2, 32)
    assert features.lengths[0] < features.lengths[1]  # real, different tokenisations


def test_a_tokenizer_that_cannot_load_names_the_folder(hub_style_t5, tmp_path):
    import shutil

    broken = tmp_path / "t5-no-tokenizer"
    shutil.copytree(hub_style_t5, broken)
    (broken / "spiece.model").unlink()  # transformers would build an all-unknown tokenizer
    with pytest.raises(ConfigError, match=r"tokenizer of .*t5-no-tokenizer has 4 tokens for"):
        TextEncoder(broken)
    (broken / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cannot load the tokenizer of .*t5-no-tokenizer"):
        TextEncoder(broken)


def test_config_width_is_checked_when_the_encoder_loads(hub_style_t5):
    from refsam.config import ModelConfig
    from refsam.modeling import build_refsam_from_config

    wrong = ModelConfig(variant="tiny", text_encoder=str(hub_style_t5), text_width=1024)
    with pytest.raises(ConfigError, match=r"model.text_width: the config says 1024.*width 32"):
        build_refsam_from_config(wrong)
    right = ModelConfig(variant="tiny", text_encoder=str(hub_style_t5), text_width=32)
    assert build_refsam_from_config(right).text_width == 32


def test_real_recipes_name_the_original_t5_3b_with_its_width():
    from pathlib import Path

    from refsam.config import load_config

    recipes = sorted(Path("configs").glob("refsam-vit*.yaml"))
    assert len(recipes) == 7  # vit_b/l/h × RefCOCO, Ref-YTVOS, plus vit_b MeViS
    for path in recipes:
        model = load_config(path).model
        assert Path(model.text_encoder).name == "t5-3b", path
        assert model.text_width == 1024, path


@pytest.mark.parametrize(
    ("dtype", "expected"), [(torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)]
)
def test_the_encoder_leaves_fp16_autocast_but_keeps_bf16(text_encoder, dtype, expected):
    """T5 overflows in fp16: under an fp16 autocast the encoder computes in fp32 (the same
    numbers as without autocast); bf16 autocast applies as usual."""
    seen: list[torch.dtype] = []
    linear = next(m for m in text_encoder.model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        plain = text_encoder(TEXTS)
        with torch.autocast(device_type="cpu", dtype=dtype):
            mixed = text_encoder(TEXTS)
    finally:
        hook.remove()
    assert seen == [torch.float32, expected]
    if dtype == torch.float16:
        assert torch.equal(plain.words, mixed.words)
