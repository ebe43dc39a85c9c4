"""Default locations (ARCHITECTURE.md, "Where things go"); all of them configurable."""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from refsam.storage import AnyPath, as_path

if TYPE_CHECKING:
    from refsam.config import RefSAMConfig

log = logging.getLogger(__name__)


def project_root() -> Path:
    """The project directory: ``$REFSAM_HOME`` or the current working directory."""
    return Path(os.environ.get("REFSAM_HOME", os.getcwd())).resolve()


# A shard directory (DATA.md "Our shard format"): <shards root>/<dataset>/<split>/ holding
# shard-*.tar, these three files and the per-shard state records.
INDEX = "index.parquet"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.jsonl"
SHARD_STATE = ".state"


def split_dir(root: AnyPath | str, dataset: str, split: str) -> AnyPath:
    """``<root>/<dataset>/<split>``: where a split's shards (or held-out GT) live; ``root``
    may be an object-store URL (:mod:`refsam.storage`)."""
    return as_path(root) / dataset / split


def has_manifest(shard_dir: AnyPath | str) -> bool:
    """Whether ``shard_dir`` holds a ``manifest.json`` (a finished ingest)."""
    return (as_path(shard_dir) / MANIFEST).is_file()


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


# ----------------------------------------------------------------- missing checkpoints
_NEAR_DEPTH = 3  # outputs/<run>/checkpoints/<file>.pt
_NEAR_SCAN = 5000  # files looked at, at most, per searched folder


def nearest_checkpoints(path: Path | str, limit: int = 3) -> list[Path]:
    """Checkpoints (``*.pt``) that exist near a missing ``path``, for its error message:
    up to three folders below its nearest existing parent folder and below the project's
    ``outputs/``; those with ``path``'s file name first, then those below the nearest
    existing parent folder, then the newest."""
    path = Path(path)
    parent = next((p for p in path.absolute().parents if p.is_dir()), None)
    roots = [r for r in (parent, project_root() / OUTPUTS) if r is not None and r.parent != r]
    found: dict[Path, Path] = {}
    for root in roots:
        scanned = 0
        for depth in range(1, _NEAR_DEPTH + 1):
            for candidate in root.glob("/".join(["*"] * depth) + ".pt"):
                scanned += 1
                if candidate.is_file():
                    found.setdefault(candidate.resolve(), candidate)
                if scanned >= _NEAR_SCAN:
                    break

    def rank(candidate: Path) -> tuple[bool, bool, float, str]:
        near = parent is not None and candidate.resolve().is_relative_to(parent.resolve())
        return (
            candidate.name != path.name, not near, -candidate.stat().st_mtime, str(candidate)
        )  # fmt: skip

    return sorted(found.values(), key=rank)[:limit]


def _shown(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def not_found_message(path: Path | str, what: str = "checkpoint") -> str:
    """``<path>: <what> not found; nearest existing: a, b, c`` (or where none was found)."""
    near = nearest_checkpoints(path)
    if near:
        return f"{path}: {what} not found; nearest existing: " + ", ".join(map(_shown, near))
    return f"{path}: {what} not found (no *.pt file near it nor under outputs/)"
