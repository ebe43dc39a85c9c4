"""Helpers of the reliability tests: copies of the demo data, output snapshots, fault injection."""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from refsam.data.sources import raw_dir_name

RESULT_FILES = ("index.parquet", "manifest.json", "quarantine.jsonl")


def copy_raw(demo_root: Path, tmp_path: Path, dataset: str) -> Path:
    """A private, writable copy of one dataset's raw root from the tiny demo."""
    target = tmp_path / "raw" / raw_dir_name(dataset)
    if not target.exists():
        shutil.copytree(demo_root / "raw" / raw_dir_name(dataset), target)
    return target


def snapshot(shard_dir: Path) -> dict[str, bytes]:
    """Every final file of a shard directory (shards, index, manifest, quarantine) → bytes."""
    names = sorted(p.name for p in shard_dir.glob("shard-*.tar")) + [
        n for n in RESULT_FILES if (shard_dir / n).is_file()
    ]
    return {n: (shard_dir / n).read_bytes() for n in names}


def temporaries(root: Path) -> list[Path]:
    """Temporary files (``.<name>.tmp-*``) anywhere under ``root``."""
    return sorted(p for p in root.rglob(".*.tmp-*"))


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Faults:
    """Simulated disk faults: ``os.fsync`` / ``os.replace`` raise ``OSError(code)`` for files
    whose name matches a glob (the writers fsync every temporary before renaming it, so a
    failing fsync is a write that did not reach the disk: ENOSPC, EIO)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.monkeypatch = monkeypatch
        self.hits: list[str] = []

    def _wrap(self, name: str, pattern: str, code: int, pick: Callable[..., str]) -> None:
        real = getattr(os, name)

        def faulty(*args: Any, **kwargs: Any) -> Any:
            target = pick(*args)
            if fnmatch.fnmatch(os.path.basename(target), pattern):
                self.hits.append(target)
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        self.monkeypatch.setattr(os, name, faulty)

    def fsync(self, pattern: str, code: int = errno.ENOSPC) -> None:
        self._wrap("fsync", pattern, code, lambda fd: _fd_path(fd))

    def replace(self, pattern: str, code: int = errno.EACCES) -> None:
        self._wrap("replace", pattern, code, lambda src, dst: str(dst))
