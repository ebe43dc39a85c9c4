"""Shared pytest fixtures (session-scoped fixtures are built once per test run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from refsam.data.demo import generate_demo
from refsam.data.shards import ingest
from refsam.data.sources import raw_dir_name


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo data (seed 0), generated once per session: ``<root>/raw/…``, ``<root>/heldout/…``."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, seed=0, scale="tiny")
    return root


TRAIN_SPLITS = [
    ("refcoco", "train"), ("refcoco+", "train"), ("refcocog", "train"),
    ("ref-youtube-vos", "train"), ("ref-youtube-vos", "valid"), ("ref-davis17", "valid"),
    ("mevis", "train"), ("mevis", "valid_u"), ("mevis", "valid"), ("refcoco", "val"), ("refcoco+", "val"),
    ("refcocog", "val"),
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_shards(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo's splits used by the configs, ingested with 2 videos per shard."""
    out = tmp_path_factory.mktemp("train-shards")
    for name, split in TRAIN_SPLITS:
        ingest(
            name, split, demo_root / "raw" / raw_dir_name(name), out, shard_size=2, progress=False
        )
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ui-screenshots",
        metavar="DIR",
        default=None,
        help="the MLflow UI browser test (tests/flows/test_mlflow_ui.py) also saves the "
        "README's screenshots into DIR (e.g. docs/img)",
    )


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
    import torch

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(folder)


@pytest.fixture(scope="session")
def hub_style_t5(tmp_path_factory) -> Path:
    """Path of a small random T5 folder without ``tokenizer.json`` (width 32)."""
    folder = tmp_path_factory.mktemp("t5-3b-like")
    write_hub_style_t5(folder)
    return folder


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback for the whole session (tests/s3server.py)."""
    from tests.s3server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3(s3_server):
    """``s3_server`` with its client variables set in this process for one test."""
    from tests.s3server import client_environment

    with client_environment(s3_server):
        yield s3_server
