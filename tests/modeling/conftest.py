"""Fixtures for the model tests: the MiniLM text encoder is loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refsam.modeling import RefSAM, TextEncoder, build_refsam  # noqa: E402

ALL_GROUPS = [
    "adapters",
    "cross_modal_mlp",
    "dense",
    "tracking",
    "mask_decoder",
    "image_encoder",
    "prompt_encoder",
]
TEXTS = ["the red circle on the left", "a cat", "the small green triangle moving to the right"]


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """The packaged MiniLM (frozen), shared by every model built in the tests."""
    return TextEncoder()


@pytest.fixture
def build_tiny(text_encoder: TextEncoder) -> Callable[..., RefSAM]:
    """``build_tiny(seed=0, **kwargs)``: a tiny RefSAM on the shared encoder, seeded."""

    def build(seed: int = 0, **kwargs) -> RefSAM:
        torch.manual_seed(seed)
        return build_refsam("tiny", text_encoder=text_encoder, **kwargs)

    return build


def _random_frames(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.fixture
def random_frames() -> Callable[..., torch.Tensor]:
    """``random_frames(*shape, seed=0)``: uint8 frames of ``shape`` (…×3×H×W)."""
    return _random_frames


def write_hub_style_t5(folder, *, d_model: int = 32) -> None:
    """A small random T5 saved as the Hub ships ``t5-3b``: config.json, weights, and a
    sentencepiece ``spiece.model`` with no ``tokenizer.json`` (the tokenizer is converted at
    load time, which needs the ``sentencepiece`` package)."""
    import io
    import json

    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel

    sentences = [
        "the small red circle moving left",
        "a big blue square on the right of the frame",
        "the dog jumping over the fence",
        "the person walking to the left",
    ] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "extra_ids": 0})
    )
    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(folder)


@pytest.fixture(scope="session")
def hub_style_t5(tmp_path_factory) -> os.PathLike:
    """Path of a small random T5 folder without ``tokenizer.json`` (width 32)."""
    folder = tmp_path_factory.mktemp("t5-3b-like")
    write_hub_style_t5(folder)
    return folder
