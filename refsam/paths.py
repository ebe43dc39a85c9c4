"""Default locations (ARCHITECTURE.md, "Where things go"); all of them configurable."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project directory: ``$REFSAM_HOME`` or the current working directory."""
    return Path(os.environ.get("REFSAM_HOME", os.getcwd())).resolve()


DEMO_RAW = Path("datasets/demo/raw")
DEMO_SHARDS = Path("datasets/demo/shards")
DEMO_HELDOUT = Path("datasets/demo/heldout")
RAW = Path("datasets/raw")
SHARDS = Path("datasets/shards")
OUTPUTS = Path("outputs")
