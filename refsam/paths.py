"""Default locations (ARCHITECTURE.md, "Where things go"); all of them configurable."""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refsam.config import RefSAMConfig

log = logging.getLogger(__name__)


def project_root() -> Path:
    """The project directory: ``$REFSAM_HOME`` or the current working directory."""
    return Path(os.environ.get("REFSAM_HOME", os.getcwd())).resolve()


DEMO_RAW = Path("datasets/demo/raw")
DEMO_SHARDS = Path("datasets/demo/shards")
DEMO_HELDOUT = Path("datasets/demo/heldout")
RAW = Path("datasets/raw")
SHARDS = Path("datasets/shards")
OUTPUTS = Path("outputs")


# ---------------------------------------------------------------- run directories
# ``refsam train`` writes ``<train.output_dir>/<train.run_name>/``; the pipeline (``make
# demo``) gives every run its own ``<run_name>-<UTC time>/``; after each completed training
# ``<output_dir>/<base run_name>-latest`` points at the run directory it wrote.
RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"
RUN_STAMP_PATTERN = "<YYYYmmdd-HHMMSS UTC>"
LATEST_SUFFIX = "-latest"
_STAMPED = re.compile(r"-\d{8}-\d{6}$")


def run_dir(cfg: RefSAMConfig) -> Path:
    """The run directory of a training of ``cfg``: ``<train.output_dir>/<train.run_name>``
    (checkpoints/, eval/, the run lock)."""
    return Path(cfg.train.output_dir) / cfg.train.run_name


def timestamped_run_name(base: str, now: datetime | None = None) -> str:
    """``<base>-YYYYmmdd-HHMMSS`` (UTC): each pipeline run gets its own run directory."""
    return f"{base}-{(now or datetime.now(UTC)).strftime(RUN_STAMP_FORMAT)}"


def base_run_name(run_name: str) -> str:
    """``run_name`` without the pipeline's ``-YYYYmmdd-HHMMSS`` suffix."""
    return _STAMPED.sub("", run_name)


def latest_run_link(cfg: RefSAMConfig) -> Path:
    """``<train.output_dir>/<base run_name>-latest``: the newest completed run of ``cfg``,
    whether ``refsam train`` or the pipeline wrote it."""
    return Path(cfg.train.output_dir) / f"{base_run_name(cfg.train.run_name)}{LATEST_SUFFIX}"


def describe_run_dirs(cfg: RefSAMConfig) -> str:
    """Where a training of ``cfg`` writes, for messages (``train --dry-run``)."""
    base = Path(cfg.train.output_dir) / base_run_name(cfg.train.run_name)
    return (
        f"{run_dir(cfg)} (refsam train; refsam pipeline / make demo: {base}-{RUN_STAMP_PATTERN}); "
        f"{latest_run_link(cfg)} -> the newest completed run"
    )


def point_latest_run(cfg: RefSAMConfig) -> Path | None:
    """Point :func:`latest_run_link` at :func:`run_dir` (a relative symlink, replaced
    atomically: a reader sees the old run or the new one). None, with a warning, where a
    symlink cannot be made (a real folder of that name, a filesystem without links)."""
    link, target = latest_run_link(cfg), run_dir(cfg)
    if link == target:
        return None
    temporary = link.with_name(f".{link.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        temporary.unlink(missing_ok=True)
        os.symlink(target.name, temporary, target_is_directory=True)
        os.replace(temporary, link)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        log.warning("could not point %s at %s: %s", link, target, exc)
        return None
    return link
