"""``index.parquet`` (one row per video × expression), ``manifest.json`` and
``quarantine.jsonl`` of a shard directory (DATA.md), each written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refsam.data.tario import member_problem
from refsam.errors import DataError

INDEX = "index.parquet"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.jsonl"
FORMAT = "refsam-shards/1"

INDEX_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("video", pa.string()),
        ("exp_id", pa.string()),
        ("text", pa.string()),
        ("obj_ids", pa.list_(pa.string())),
        ("annotation_set", pa.int8()),
        ("n_frames", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("shard", pa.string()),
        ("key", pa.string()),
    ]
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary name next to ``path`` and fsync it; on any failure the
    temporary is removed and the OSError names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, f"{exc.strerror} (writing)", str(path)) from exc
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, then rename over ``path``.

    On failure (disk full, no permission, I/O error) ``path`` keeps its previous content and
    no temporary file is left behind."""
    atomic_write_many([(path, data)])


def atomic_write_many(files: list[tuple[Path, bytes]]) -> None:
    """Write several files all-or-nothing against write errors: every temporary is written
    and fsynced first, then they are renamed in the given order (put the file that commits
    the others, e.g. the manifest, last). If any write fails, none of the targets changes."""
    temps: list[Path] = []
    try:
        for path, data in files:
            temps.append(_write_temporary(path, data))
        for tmp, (path, _data) in zip(temps, files, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, UTF-8): the same input gives the same bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def index_bytes(rows: list[dict[str, Any]]) -> bytes:
    """The bytes of ``index.parquet`` for these rows (deterministic)."""
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_index(rows: list[dict[str, Any]], path: Path) -> None:
    atomic_write_bytes(path, index_bytes(rows))


def read_index(shard_dir: Path) -> pa.Table:
    """The index of a shard directory as a pyarrow Table (``.to_pylist()`` for rows)."""
    path = Path(shard_dir) / INDEX
    if not path.is_file():
        raise DataError(f"{path}: not found; expected the index written by `refsam ingest`")
    return pq.read_table(path)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, manifest_bytes(manifest))


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; expected a shard directory written by `refsam ingest`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: expected a manifest with format {FORMAT!r}")
    return manifest


def quarantine_bytes(items: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(dumps(item) + b"\n" for item in items)


def write_quarantine(items: Iterable[dict[str, Any]], path: Path) -> None:
    atomic_write_bytes(path, quarantine_bytes(items))


def read_quarantine(shard_dir: Path) -> list[dict[str, Any]]:
    path = Path(shard_dir) / QUARANTINE
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def verify(shard_dir: Path) -> list[str]:
    """Compare every shard with the manifest (sha256, size, sample count); returns problems."""
    manifest = read_manifest(shard_dir)
    problems = []
    listed = {s["name"] for s in manifest["shards"]}
    for extra in sorted(
        p.name for p in sorted(Path(shard_dir).glob("shard-*.tar")) if p.name not in listed
    ):
        problems.append(f"{extra}: not listed in the manifest")
    for entry in manifest["shards"]:
        path = Path(shard_dir) / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256/size differs from the manifest")
            continue
        try:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
        except tarfile.TarError as exc:
            problems.append(f"{entry['name']}: unreadable tar ({exc})")
            continue
        unsafe = [p for p in map(member_problem, members) if p]
        problems.extend(f"{entry['name']}: {p}" for p in unsafe)
        keys = {m.name.split(".", 1)[0] for m in members}
        if len(keys) != entry["samples"]:
            problems.append(
                f"{entry['name']}: {len(keys)} samples, manifest says {entry['samples']}"
            )
    return problems
