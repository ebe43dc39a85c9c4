"""The shard plan of an ingest: the sorted videos of a raw split cut into fixed ranges.

The plan depends only on the input, the shard size and the code version — never on the
worker count — so the same input gives the same shards however it is written.
Opening the source here is where fatal input errors (bad root, malformed metadata, unsafe
pickle) surface, before anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from refsam import __version__
from refsam.data.index import dumps
from refsam.data.sources import open_source
from refsam.data.sources.base import Source
from refsam.data.sources.raw_files import unsafe_name
from refsam.data.types import QuarantineItem, shard_key
from refsam.errors import DataError
from refsam.paths import split_dir
from refsam.storage import as_path

DEFAULT_SHARD_SIZE = 64


@cache
def code_version() -> str:
    """Package version + hash of the code that decides shard bytes (readers and writer)."""
    here = Path(__file__).resolve().parent
    files = sorted([*here.glob("*.py"), *(here / "sources").glob("*.py")])
    digest = hashlib.sha256()
    for path in files:
        if not path.name.startswith(("demo", "loader", "transforms")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


@dataclass(frozen=True)
class ShardTask:
    """One shard of the plan: its videos and a key of everything its bytes depend on."""

    index: int
    name: str
    videos: tuple[str, ...]
    plan_key: str


@dataclass
class IngestPlan:
    dataset: str
    split: str
    raw: Path
    out_dir: Path
    shard_size: int
    fingerprint: str
    code_version: str
    shards: list[ShardTask]
    planning_quarantine: list[QuarantineItem]
    source: Source = field(repr=False)


def plan_ingest(
    dataset: str, split: str, raw: Path, out: Path, *, shard_size: int = DEFAULT_SHARD_SIZE
) -> IngestPlan:
    """Open the raw split (fatal DataError on bad whole files) and plan the shard ranges.

    The plan depends only on the input and ``shard_size``, never on the worker count.
    """
    if shard_size <= 0:
        raise DataError(f"shard size must be positive, got {shard_size}")
    source = open_source(dataset, split, as_path(raw))
    videos, quarantine = [], list(source.planning_quarantine)
    keys: set[str] = set()
    for video in source.video_ids():
        problem = unsafe_name(video)
        if problem:  # e.g. "../x" or "/etc": never joined to a path under the raw root
            quarantine.append(
                source.quarantine(
                    "unsafe_path",
                    "video",
                    source.root,
                    f"video id {problem}; refusing a path outside the raw root",
                    video=str(video),
                )
            )
            continue
        key = shard_key(video)
        if key in keys:
            quarantine.append(
                source.quarantine(
                    "duplicate_id",
                    "video",
                    source.root,
                    f"video {video!r} has the same shard key {key!r} as another",
                    video=video,
                )
            )
            continue
        keys.add(key)
        videos.append(video)
    fingerprint, version = source.fingerprint(), code_version()
    shards = []
    for index, start in enumerate(range(0, len(videos), shard_size)):
        chunk = tuple(videos[start : start + shard_size])
        key = hashlib.sha256(
            dumps([dataset, split, fingerprint, version, shard_size, index, chunk])
        ).hexdigest()
        shards.append(ShardTask(index, shard_name(index), chunk, key))
    return IngestPlan(
        dataset,
        split,
        as_path(raw),
        split_dir(out, dataset, split),
        shard_size,
        fingerprint,
        version,
        shards,
        quarantine,
        source,
    )
