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
    ("mevis", "train"), ("mevis", "valid"), ("refcoco", "val"), ("refcoco+", "val"), ("refcocog", "val"),
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
