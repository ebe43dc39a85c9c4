"""Fixtures of the data tests: the tiny demo ingested once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from refsam.data.shards import IngestSummary, ingest
from refsam.data.sources import dataset_names, raw_dir_name, source_class

SHARD_SIZE = 2


def all_splits() -> list[tuple[str, str]]:
    return [(name, split) for name in dataset_names() for split in source_class(name).splits]


@pytest.fixture(scope="session")
def demo_raw(demo_root: Path) -> Path:
    return demo_root / "raw"


@pytest.fixture(scope="session")
def ingested(
    demo_raw: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[tuple[str, str], IngestSummary]]:
    """Every dataset/split of the tiny demo ingested (shard size 2) into one shards root."""
    out = tmp_path_factory.mktemp("shards")
    summaries = {
        (name, split): ingest(
            name, split, demo_raw / raw_dir_name(name), out, shard_size=SHARD_SIZE, progress=False
        )
        for name, split in all_splits()
    }
    return out, summaries
