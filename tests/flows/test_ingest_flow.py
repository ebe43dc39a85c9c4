"""The Prefect ingest flow on a real ephemeral server: same bytes as the library, cached
re-runs, and cache hits are not trusted once outputs are gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from refsam.data.index import read_manifest
from refsam.data.shards import ingest, shard_paths
from refsam.errors import DataError

pytestmark = pytest.mark.slow


def _tree(shard_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_paths(shard_dir)}


def test_flow_writes_library_bytes_and_caches(
    prefect_harness: Path, demo_root: Path, tmp_path: Path
) -> None:
    from flows.ingest import run_ingest_flow

    raw = demo_root / "raw" / "ref-davis"
    ingest("ref-davis17", "valid", raw, tmp_path / "lib", shard_size=1, progress=False)
    out = tmp_path / "flow"
    first = run_ingest_flow("ref-davis17", "valid", raw, out, shard_size=1, workers=2)
    shard_dir = out / "ref-davis17" / "valid"
    assert first["shards"] == 3 and first["shards_cached"] == 0 and first["quarantined"] == 0
    assert _tree(shard_dir) == _tree(tmp_path / "lib" / "ref-davis17" / "valid")
    manifest = read_manifest(shard_dir)
    assert manifest["counts"]["expressions"] == first["expressions"] > 0

    second = run_ingest_flow("ref-davis17", "valid", raw, out, shard_size=1, workers=2)
    assert second["shards_cached"] == 3

    victim = shard_paths(shard_dir)[1]
    victim.unlink()  # the cached result must not be trusted any more
    third = run_ingest_flow("ref-davis17", "valid", raw, out, shard_size=1, workers=2)
    assert third["shards_cached"] == 2
    assert _tree(shard_dir) == _tree(tmp_path / "lib" / "ref-davis17" / "valid")


def test_flow_reuses_shards_the_cli_wrote(
    prefect_harness: Path, demo_root: Path, tmp_path: Path
) -> None:
    """`make demo` runs `refsam ingest --all` and then the pipeline: the flow must take the
    library's complete shards as they are (same plan key and sha256), not rewrite them."""
    from flows.ingest import run_ingest_flow

    raw = demo_root / "raw" / "ref-davis"
    ingest("ref-davis17", "valid", raw, tmp_path, shard_size=1, progress=False)
    shard_dir = tmp_path / "ref-davis17" / "valid"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_paths(shard_dir)}
    summary = run_ingest_flow("ref-davis17", "valid", raw, tmp_path, shard_size=1, workers=2)
    assert summary["shards"] == summary["shards_cached"] == 3
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_paths(shard_dir)}
    assert after == before
    # another shard size is another plan key: nothing is reused
    other = run_ingest_flow("ref-davis17", "valid", raw, tmp_path, shard_size=2, workers=2)
    assert other["shards_cached"] == 0 and other["shards"] == 2


def test_flow_fails_clearly_on_a_bad_whole_file(
    prefect_harness: Path, demo_root: Path, tmp_path: Path
) -> None:
    import shutil

    from flows.ingest import run_ingest_flow

    raw = tmp_path / "mevis"
    shutil.copytree(demo_root / "raw" / "mevis", raw)
    (raw / "train" / "meta_expressions.json").write_text('{"videos": {')
    with pytest.raises(DataError, match="meta_expressions.json: malformed JSON at line 1"):
        run_ingest_flow("mevis", "train", raw, tmp_path / "out", shard_size=1)
    assert not (tmp_path / "out").exists()


def test_shard_tasks_retry_only_on_io_errors() -> None:
    from prefect.states import Failed

    from flows.ingest import _retry_on_io
    from refsam.errors import DataError as _DataError

    assert _retry_on_io(None, None, Failed(data=OSError("disk hiccup")))
    assert not _retry_on_io(None, None, Failed(data=FileNotFoundError("raw file gone")))
    assert not _retry_on_io(None, None, Failed(data=PermissionError("read-only output")))
    assert not _retry_on_io(None, None, Failed(data=_DataError("bad meta")))
    assert not _retry_on_io(None, None, Failed(data=ValueError("bug")))
