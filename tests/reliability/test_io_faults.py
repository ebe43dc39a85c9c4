"""Disk and I/O faults (ENOSPC, EACCES, EIO) while writing shards, the index, the manifest,
score tables or a submission zip: the previous good files stay intact, no temporary is left,
the error names the file; transient read errors of a shard are retried a bounded number of
times, then reported with the shard's name."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest

import refsam.data.tario as tario
from refsam.data.index import read_manifest, verify
from refsam.data.loader import iter_eval_videos
from refsam.data.shards import ingest
from refsam.eval.submission import SubmissionZip
from refsam.fsio import temporary_path
from tests.reliability.helpers import Faults, copy_raw, snapshot, temporaries

DATASET, SPLIT = "refcocog", "train"


@pytest.fixture
def good(demo_root: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A raw copy and a complete ingest of it with shard size 2 (the previous good state)."""
    raw = copy_raw(demo_root, tmp_path, DATASET)
    out = tmp_path / "out"
    ingest(DATASET, SPLIT, raw, out, shard_size=2, progress=False)
    return raw, out, snapshot(out / DATASET / SPLIT)


def _expected(raw: Path, tmp_path: Path, shard_size: int) -> dict[str, bytes]:
    ingest(DATASET, SPLIT, raw, tmp_path / "expected", shard_size=shard_size, progress=False)
    return snapshot(tmp_path / "expected" / DATASET / SPLIT)


@pytest.mark.parametrize(
    ("pattern", "code", "what"),
    [
        (".index.parquet.tmp-*", errno.ENOSPC, "index"),
        (".quarantine.jsonl.tmp-*", errno.EIO, "quarantine"),
        (".manifest.json.tmp-*", errno.ENOSPC, "manifest"),
    ],
)
def test_fault_while_writing_index_or_manifest_keeps_all_three(
    good, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str, code: int, what: str
) -> None:
    """Index, quarantine and manifest are committed together: a fault on any of them leaves
    the previous three (a new shard size changes the index, so a mix would show)."""
    raw, out, before = good
    shard_dir = out / DATASET / SPLIT
    expected = _expected(raw, tmp_path, 3)
    faults = Faults(monkeypatch)
    faults.fsync(pattern, code)
    with pytest.raises(OSError) as caught:
        ingest(DATASET, SPLIT, raw, out, shard_size=3, progress=False)
    assert caught.value.errno == code and what in str(caught.value)
    assert faults.hits
    after = snapshot(shard_dir)
    for name in ("index.parquet", "manifest.json", "quarantine.jsonl"):
        assert after[name] == before[name], f"{name} changed although the commit failed"
    assert temporaries(out) == [] and not (shard_dir / ".lock").exists()
    monkeypatch.undo()  # the disk is fixed: the next run completes
    ingest(DATASET, SPLIT, raw, out, shard_size=3, progress=False)
    assert snapshot(shard_dir) == expected


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_fault_while_writing_a_shard(
    good, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A failed shard write never leaves a partial file under the shard's name: the old
    complete shard stays, the manifest still describes the old shards."""
    raw, out, before = good
    shard_dir = out / DATASET / SPLIT
    new = _expected(raw, tmp_path, 3)
    faults = Faults(monkeypatch)
    faults.fsync(".shard-000001.tar.tmp-*", code)
    with pytest.raises(OSError) as caught:
        ingest(DATASET, SPLIT, raw, out, shard_size=3, progress=False)
    assert caught.value.errno == code and "shard-000001.tar" in str(caught.value)
    after = snapshot(shard_dir)
    assert after["shard-000001.tar"] == before["shard-000001.tar"]
    for name, data in after.items():  # every file is a complete old or new version
        assert data in (before.get(name), new.get(name)), name
    assert after["manifest.json"] == before["manifest.json"]
    assert temporaries(out) == []
    monkeypatch.undo()
    ingest(DATASET, SPLIT, raw, out, shard_size=3, progress=False)
    assert snapshot(shard_dir) == new and verify(shard_dir) == []


def test_permission_denied_on_rename_of_the_manifest(good, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES when moving the manifest into place (runs as root here, so a read-only folder
    would not stop it: the rename is made to fail instead)."""
    raw, out, before = good
    shard_dir = out / DATASET / SPLIT
    (shard_dir / "shard-000000.tar").unlink()  # force a real rewrite
    Faults(monkeypatch).replace("manifest.json", errno.EACCES)
    with pytest.raises(PermissionError):
        ingest(DATASET, SPLIT, raw, out, shard_size=2, progress=False)
    assert read_manifest(shard_dir) and snapshot(shard_dir) == before
    assert temporaries(out) == []


def test_submission_zip_fault_keeps_the_previous_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sub.zip"
    mask = np.zeros((4, 6), bool)
    with SubmissionZip(out, layout="mevis") as sub:
        sub.add("v1", "0", "00000", mask)
    previous = out.read_bytes()
    # ENOSPC from the kernel: the temporary name is a link to /dev/full
    tmp = temporary_path(out)  # the name SubmissionZip writes to in this thread
    if Path("/dev/full").exists():
        tmp.symlink_to("/dev/full")
        with pytest.raises(OSError) as caught, SubmissionZip(out, layout="mevis") as sub:
            for frame in range(200):
                sub.add("v1", "0", f"{frame:05d}", mask)
        assert caught.value.errno == errno.ENOSPC
        assert out.read_bytes() == previous and not tmp.exists() and not tmp.is_symlink()
    # EACCES when moving the finished zip into place
    Faults(monkeypatch).replace("sub.zip", errno.EACCES)
    with pytest.raises(PermissionError) as denied, SubmissionZip(out, layout="mevis") as sub:
        sub.add("v2", "0", "00000", mask)
    assert "sub.zip" in str(denied.value)
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip"]


def test_score_tables_fault_keeps_previous_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refsam.commands.score import write_tables
    from refsam.eval.protocols import ProtocolResult

    result = ProtocolResult("refcoco", {"mIoU": 0.5}, [{"sentence": "1", "iou": 0.5}], {})
    write_tables(tmp_path, result)
    previous = (tmp_path / "summary.json").read_bytes()
    Faults(monkeypatch).fsync(".summary.json.tmp-*", errno.ENOSPC)
    changed = ProtocolResult("refcoco", {"mIoU": 0.9}, [{"sentence": "1", "iou": 0.9}], {})
    with pytest.raises(OSError, match="summary.json"):
        write_tables(tmp_path, changed)
    assert (tmp_path / "summary.json").read_bytes() == previous
    assert temporaries(tmp_path) == []


class _Flaky(io.RawIOBase):
    """A shard file whose reads fail with EIO once ``fail_at`` bytes were read."""

    def __init__(self, path: str, fail_at: int) -> None:
        self.handle, self.fail_at, self.pos = open(path, "rb"), fail_at, 0  # noqa: SIM115

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.pos >= self.fail_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        data = self.handle.read(min(len(buffer), self.fail_at - self.pos))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.handle.close()
        super().close()


def _flaky_opens(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[str]:
    """The first ``failures`` opens of each shard fail half-way through the file."""
    opened: list[str] = []

    def open_shard(path: str):
        opened.append(path)
        if opened.count(path) <= failures:
            return io.BufferedReader(_Flaky(path, os.path.getsize(path) // 2))
        return open(path, "rb")  # noqa: SIM115

    monkeypatch.setattr(tario, "open_shard", open_shard)
    monkeypatch.setattr(tario, "RETRY_DELAY_S", 0.0)
    return opened


def _read_all(shard_dir: Path) -> list[tuple[str, list[str], list[bytes]]]:
    return [(v.video, v.frame_names, v.jpeg_bytes) for v in iter_eval_videos(shard_dir)]


def test_transient_read_errors_are_retried(good, monkeypatch: pytest.MonkeyPatch) -> None:
    _raw, out, _ = good
    shard_dir = out / DATASET / SPLIT
    clean = _read_all(shard_dir)
    opened = _flaky_opens(monkeypatch, failures=tario.READ_RETRIES)
    assert _read_all(shard_dir) == clean  # nothing lost, nothing repeated
    assert len(opened) == len(set(opened)) * (tario.READ_RETRIES + 1)


def test_persistent_read_errors_name_the_shard(good, monkeypatch: pytest.MonkeyPatch) -> None:
    _raw, out, _ = good
    shard_dir = out / DATASET / SPLIT
    opened = _flaky_opens(monkeypatch, failures=10**6)
    with pytest.raises(OSError) as caught:
        _read_all(shard_dir)
    assert caught.value.errno == errno.EIO
    assert "shard-000000.tar" in str(caught.value)
    assert f"after {tario.READ_RETRIES + 1} attempts" in str(caught.value)
    assert len(opened) == tario.READ_RETRIES + 1  # bounded
