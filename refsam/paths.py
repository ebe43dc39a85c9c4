"""Default locations (ARCHITECTURE.md, "Where things go"); all of them configurable."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project directory: ``$REFSAM_HOME`` or the current working directory."""
    return Path(os.environ.get("REFSAM_HOME", os.getcwd())).resolve()


# A shard directory (DATA.md "Our shard format"): <shards root>/<dataset>/<split>/ holding
# shard-*.tar, these three files and the per-shard state records.
INDEX = "index.parquet"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.jsonl"
SHARD_STATE = ".state"


def split_dir(root: Path | str, dataset: str, split: str) -> Path:
    """``<root>/<dataset>/<split>``: where a split's shards (or held-out GT) live."""
    return Path(root) / dataset / split


def has_manifest(shard_dir: Path | str) -> bool:
    """Whether ``shard_dir`` holds a ``manifest.json`` (a finished ingest)."""
    return (Path(shard_dir) / MANIFEST).is_file()


DEMO_RAW = Path("datasets/demo/raw")
DEMO_SHARDS = Path("datasets/demo/shards")
DEMO_HELDOUT = Path("datasets/demo/heldout")
RAW = Path("datasets/raw")
SHARDS = Path("datasets/shards")
OUTPUTS = Path("outputs")
