"""``index.parquet`` (one row per video × expression), ``manifest.json`` and
``quarantine.jsonl`` of a shard directory (DATA.md), each written atomically."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refsam.data.tario import member_problem
from refsam.errors import DataError
from refsam.fsio import atomic_write_bytes, file_sha256
from refsam.paths import INDEX, MANIFEST, QUARANTINE
from refsam.storage import AnyPath, as_path

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


def read_index(shard_dir: AnyPath) -> pa.Table:
    """The index of a shard directory as a pyarrow Table (``.to_pylist()`` for rows)."""
    path = as_path(shard_dir) / INDEX
    if not path.is_file():
        raise DataError(f"{path}: not found; expected the index written by `refsam ingest`")
    with path.open("rb") as handle:
        return pq.read_table(handle)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, manifest_bytes(manifest))


def _parse_manifest(path: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: expected a manifest with format {FORMAT!r}")
    return manifest


def _manifest_data(shard_dir: AnyPath) -> tuple[AnyPath, bytes]:
    path = as_path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; expected a shard directory written by `refsam ingest`")
    return path, path.read_bytes()


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    """The manifest of a shard directory; DataError naming it when missing or not one."""
    return _parse_manifest(*_manifest_data(shard_dir))


def manifest_hash(shard_dir: Path) -> str:
    """sha256 of a shard directory's ``manifest.json``: the data version that checkpoints
    (``data_manifests``) and the model registry (``eval.manifest_hash``) record. DataError
    naming the file when it is missing or not a refsam manifest."""
    path, data = _manifest_data(shard_dir)
    _parse_manifest(path, data)
    return hashlib.sha256(data).hexdigest()


def quarantine_bytes(items: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(dumps(item) + b"\n" for item in items)


def write_quarantine(items: Iterable[dict[str, Any]], path: Path) -> None:
    atomic_write_bytes(path, quarantine_bytes(items))


def read_quarantine(shard_dir: AnyPath) -> list[dict[str, Any]]:
    path = as_path(shard_dir) / QUARANTINE
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def verify(shard_dir: AnyPath) -> list[str]:
    """Compare every shard with the manifest (sha256, size, sample count); returns problems."""
    shard_dir = as_path(shard_dir)
    manifest = read_manifest(shard_dir)
    problems = []
    listed = {s["name"] for s in manifest["shards"]}
    for extra in sorted(p.name for p in shard_dir.glob("shard-*.tar") if p.name not in listed):
        problems.append(f"{extra}: not listed in the manifest")
    for entry in manifest["shards"]:
        path = shard_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        if path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256/size differs from the manifest")
            continue
        try:
            with path.open("rb") as handle, tarfile.open(fileobj=handle) as tar:
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
