"""Deterministic, atomic, resumable shard writer (DATA.md "Our shard format").

``ingest`` = :func:`~refsam.data.plan.plan_ingest` (open the source — fatal errors happen here, before
anything is written — and cut the sorted video list into fixed shard ranges) →
:func:`write_shard` per range (in any order, on any worker: each shard depends only on
its own videos) → :func:`finalize` (index, manifest, quarantine). Shards are written to
a temporary name and renamed; a per-shard state record (``.state/<shard>.json``) written
after the rename lets a re-run skip complete shards whose sha256 still matches.
The Prefect flow (flows/ingest.py) composes the same three functions.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import tarfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from refsam import fsio
from refsam.data.index import FORMAT, dumps, index_bytes, manifest_bytes, quarantine_bytes
from refsam.data.lock import output_lock
from refsam.data.plan import DEFAULT_SHARD_SIZE, IngestPlan, ShardTask, code_version, plan_ingest
from refsam.data.sources import catalog_card
from refsam.data.types import VideoRecord
from refsam.errors import DataError
from refsam.paths import INDEX, MANIFEST, QUARANTINE, SHARD_STATE
from refsam.storage import AnyPath, as_path, ensure_dir, is_remote

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "IngestPlan",
    "IngestSummary",
    "ShardResult",
    "ShardTask",
    "code_version",
    "completed_shard",
    "finalize",
    "ingest",
    "plan_ingest",
    "remove_temporaries",
    "sample_members",
    "shard_paths",
    "write_shard",
]

STATE_DIR = SHARD_STATE
MTIME = 0  # fixed member metadata → byte-reproducible tars


@dataclass
class ShardResult:
    name: str
    sha256: str
    size: int
    samples: int
    frames: int
    expressions: int
    plan_key: str
    index_rows: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    skipped: bool = False


@dataclass
class IngestSummary:
    dataset: str
    split: str
    out_dir: Path
    videos: int
    expressions: int
    frames: int
    shards: int
    shards_written: int
    shards_skipped: int
    quarantined: int
    quarantine_by_reason: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir)}


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def sample_members(record: VideoRecord) -> list[tuple[str, bytes]]:
    """The tar members of one video, sorted by name: ``<key>.<frame>.jpg`` … and ``<key>.json``."""
    assert record.frame_bytes is not None
    members = [
        (f"{record.key}.{n}.jpg", b)
        for n, b in zip(record.frame_names, record.frame_bytes, strict=True)
    ]
    members.append((f"{record.key}.json", dumps(record.to_json())))
    return sorted(members)


class _HashingWriter:
    """File wrapper that hashes (sha256) and counts what tarfile writes through it."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest, self.offset = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.offset += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.offset


def _index_row(record: VideoRecord, expression: Any, shard: str) -> dict[str, Any]:
    """One index.parquet row (video × expression)."""
    return {
        "dataset": record.dataset,
        "split": record.split,
        "video": record.video,
        "exp_id": expression.exp_id,
        "text": expression.text,
        "obj_ids": list(expression.obj_ids),
        "annotation_set": expression.annotation_set,
        "n_frames": len(record.frame_names),
        "height": record.height,
        "width": record.width,
        "shard": shard,
        "key": record.key,
    }


def _state_path(plan: IngestPlan, task: ShardTask) -> Path:
    return plan.out_dir / STATE_DIR / f"{task.name}.json"


def completed_shard(plan: IngestPlan, task: ShardTask) -> ShardResult | None:
    """The recorded result of a complete shard whose plan key and sha256 still match."""
    state, tar = _state_path(plan, task), plan.out_dir / task.name
    try:
        result = ShardResult(**json.loads(state.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if result.plan_key != task.plan_key or not tar.is_file() or tar.stat().st_size != result.size:
        return None
    if fsio.file_sha256(tar) != result.sha256:
        log.warning("%s: checksum mismatch, rewriting it", tar)
        return None
    result.skipped = True
    return result


def write_shard(plan: IngestPlan, task: ShardTask) -> ShardResult:
    """Write one shard (or skip it when complete and intact); returns its result record."""
    done = completed_shard(plan, task)
    if done is not None:
        return done
    ensure_dir(plan.out_dir)
    rows: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    samples = frames = 0
    # atomic: a killed run never leaves a half shard under the final name, a failed write
    # (disk full, I/O error…) leaves the previous shard as it was
    final = plan.out_dir / task.name
    with fsio.atomic_path(final, what="writing shard") as tmp, tmp.open("wb") as handle:
        sink = _HashingWriter(handle)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
            for video in task.videos:
                result = plan.source.load_video(video)
                quarantined.extend(q.to_json() for q in result.quarantined)
                record = result.record
                if record is None:
                    continue
                for name, data in sample_members(record):
                    tar.addfile(*_member(name, data))
                samples += 1
                frames += len(record.frame_names)
                rows.extend(_index_row(record, e, task.name) for e in record.expressions)
    result = ShardResult(
        task.name,
        sink.digest.hexdigest(),
        sink.offset,
        samples,
        frames,
        len(rows),
        task.plan_key,
        rows,
        quarantined,
    )
    state = _state_path(plan, task)
    ensure_dir(state.parent)
    fsio.atomic_write_bytes(state, dumps(asdict(result)))
    return result


def finalize(plan: IngestPlan, results: list[ShardResult]) -> IngestSummary:
    """Write index.parquet, quarantine.jsonl and manifest.json; drop stale shards/temps."""
    results = sorted(results, key=lambda r: r.name)
    if [r.name for r in results] != [t.name for t in plan.shards]:
        raise RuntimeError("finalize needs one result per planned shard")
    planned = {t.name for t in plan.shards}
    for path in plan.out_dir.glob("shard-*.tar"):
        if path.name not in planned:
            path.unlink()
    for path in (plan.out_dir / STATE_DIR).glob("*.json"):
        if path.name.removesuffix(".json") not in planned:
            path.unlink()
    quarantined = [q.to_json() for q in plan.planning_quarantine] + [
        q for r in results for q in r.quarantined
    ]
    ensure_dir(plan.out_dir)
    by_reason = dict(sorted(Counter(q["reason"] for q in quarantined).items()))
    counts = {
        "videos": sum(r.samples for r in results),
        "expressions": sum(r.expressions for r in results),
        "frames": sum(r.frames for r in results),
        "quarantined": len(quarantined),
        "quarantine_by_reason": by_reason,
    }
    manifest = {
        "format": FORMAT,
        "dataset": plan.dataset,
        "split": plan.split,
        "card": catalog_card(plan.dataset),
        "has_masks": plan.source.has_masks,
        "source": {
            "root": str(plan.raw),
            "fingerprint": plan.fingerprint,
            "metadata_files": plan.source.metadata_files,
        },
        "shard_size": plan.shard_size,
        "counts": counts,
        "shards": [
            {
                "name": r.name,
                "size": r.size,
                "sha256": r.sha256,
                "samples": r.samples,
                "frames": r.frames,
                "expressions": r.expressions,
            }
            for r in results
        ],
        "code_version": plan.code_version,
    }
    # all three or none (a write error leaves the previous ones); the manifest commits last
    fsio.atomic_write_many(
        [
            (plan.out_dir / INDEX, index_bytes([row for r in results for row in r.index_rows])),
            (plan.out_dir / QUARANTINE, quarantine_bytes(quarantined)),
            (plan.out_dir / MANIFEST, manifest_bytes(manifest)),
        ]
    )
    return IngestSummary(
        dataset=plan.dataset,
        split=plan.split,
        out_dir=plan.out_dir,
        videos=counts["videos"],
        expressions=counts["expressions"],
        frames=counts["frames"],
        shards=len(results),
        shards_written=sum(not r.skipped for r in results),
        shards_skipped=sum(r.skipped for r in results),
        quarantined=len(quarantined),
        quarantine_by_reason=by_reason,
        seconds=0.0,
    )


def remove_temporaries(out_dir: Path) -> None:
    """Delete temporary files a killed run left behind (call while holding the lock)."""
    fsio.remove_temporaries(out_dir)
    fsio.remove_temporaries(out_dir / STATE_DIR)


_WORKER_PLAN: IngestPlan | None = None


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: the kernel kills this worker when the ingest process dies
    (Linux ``PR_SET_PDEATHSIG``), so a killed ingest leaves no orphan still writing shards
    next to the run that resumes it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _process_worker(index: int) -> ShardResult:
    assert _WORKER_PLAN is not None
    return write_shard(_WORKER_PLAN, _WORKER_PLAN.shards[index])


def ingest(
    dataset: str,
    split: str,
    raw: Path,
    out: Path,
    *,
    workers: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    strict: bool = False,
    executor: str = "process",
    progress: bool = True,
) -> IngestSummary:
    """Ingest one raw split into ``out/<dataset>/<split>/`` (see module docstring).

    ``workers`` > 1 writes shards in parallel (``executor`` "process" or "thread"); the
    bytes do not depend on it. With a root on an object store the writers are threads:
    fsspec's clients cannot cross a fork, and the work there waits on the network. ``strict``: any quarantined item raises DataError.
    """
    global _WORKER_PLAN
    start = time.perf_counter()
    plan = plan_ingest(dataset, split, raw, out, shard_size=shard_size)
    if strict and plan.planning_quarantine:
        raise DataError(
            f"{dataset}/{split}: {len(plan.planning_quarantine)} item(s) would be quarantined "
            f"(first: {plan.planning_quarantine[0].reason}: {plan.planning_quarantine[0].message}); "
            "--strict"
        )
    total = sum(len(t.videos) for t in plan.shards)
    with output_lock(plan.out_dir):
        remove_temporaries(plan.out_dir)
        results: list[ShardResult] = []
        bar = tqdm(
            total=total, unit="video", desc=f"ingest {dataset}/{split}", disable=not progress
        )
        if workers <= 1 or len(plan.shards) <= 1:
            for task in plan.shards:
                results.append(write_shard(plan, task))
                bar.update(len(task.videos))
        else:
            if executor == "process" and not (is_remote(plan.raw) or is_remote(plan.out_dir)):
                _WORKER_PLAN = plan
                pool: Any = ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("fork"),
                    initializer=_die_with_parent,
                    initargs=(os.getpid(),),
                )
                submit = [pool.submit(_process_worker, t.index) for t in plan.shards]
            else:
                pool = ThreadPoolExecutor(workers)
                submit = [pool.submit(write_shard, plan, t) for t in plan.shards]
            with pool:
                for task, future in zip(plan.shards, submit, strict=True):
                    results.append(future.result())
                    bar.update(len(task.videos))
            _WORKER_PLAN = None
        bar.close()
        summary = finalize(plan, results)
    summary.seconds = time.perf_counter() - start
    if strict and summary.quarantined:
        raise DataError(
            f"{dataset}/{split}: {summary.quarantined} item(s) quarantined "
            f"({', '.join(f'{k}: {v}' for k, v in summary.quarantine_by_reason.items())}); "
            f"see {plan.out_dir / QUARANTINE}; --strict"
        )
    return summary


def shard_paths(shard_dir: AnyPath) -> list[AnyPath]:
    """The shard tars of a directory (or object-store prefix) in order."""
    return sorted(as_path(shard_dir).glob("shard-*.tar"), key=lambda p: p.name)
