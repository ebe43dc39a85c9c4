"""refsam.fsio (atomic writes, temporaries, sha256, CSV) and the shard-directory helpers
that build on it (refsam.paths, ``manifest_hash``): real files in a tmp dir, real threads
and processes, faults injected at the system call the code makes."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from refsam import fsio
from refsam.config import load_config
from refsam.data.index import FORMAT, manifest_hash, write_manifest
from refsam.errors import DataError, UserError
from refsam.paths import MANIFEST, has_manifest, split_dir
from refsam.train.state import data_manifests

REPO = Path(__file__).resolve().parents[1]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    calls: list[int] = []

    def failing(fd: int) -> None:
        calls.append(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing)
    return calls


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_bytes_text_json_replace_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    fsio.atomic_write_bytes(path, b"one")
    fsio.atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    fsio.atomic_write_text(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\n".encode()
    fsio.atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "j.json").read_text() == json.dumps({"b": 1, "a": [1.5]}, indent=2) + "\n"
    assert _entries(tmp_path) == ["j.json", "out.bin", "t.txt"]


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous complete version")
    seen: list[Path] = []

    def write(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"half of the new ")
        handle.flush()
        seen.append(Path(handle.name))
        assert Path(handle.name).read_bytes() == b"half of the new "  # really on disk
        raise ValueError("the writer failed part-way")

    with pytest.raises(ValueError, match="part-way"):
        fsio.atomic_write(path, write)
    assert path.read_bytes() == b"previous complete version"
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".model.pt.tmp-")
    assert _entries(tmp_path) == ["model.pt"]


def test_atomic_path_commits_only_a_block_that_ends_normally(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with fsio.atomic_path(path) as tmp:
        assert tmp != path and not path.exists()
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(KeyboardInterrupt), fsio.atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # even a BaseException cleans up
    assert path.read_bytes() == b"new" and _entries(tmp_path) == ["a.zip"]


def test_atomic_write_returns_what_the_writer_returns(tmp_path: Path) -> None:
    assert fsio.atomic_write(tmp_path / "x", lambda handle: handle.write(b"abc")) == 3
    assert (tmp_path / "x").read_bytes() == b"abc"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_fsync_names_the_final_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = tmp_path / "index.parquet"
    path.write_bytes(b"old")
    calls = _fail_fsync(monkeypatch, code)
    with pytest.raises(OSError) as caught:
        fsio.atomic_write_bytes(path, b"new")
    assert calls
    assert caught.value.errno == code and caught.value.filename == str(path)
    assert str(caught.value) == f"[Errno {code}] {os.strerror(code)} (writing): '{path}'"
    assert path.read_bytes() == b"old" and _entries(tmp_path) == ["index.parquet"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(b"old")

    def denied(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(PermissionError) as caught:
        fsio.atomic_write(path, lambda handle: handle.write(b"new"), what="writing checkpoint")
    assert caught.value.filename == str(path) and "(writing checkpoint)" in str(caught.value)
    assert path.read_bytes() == b"old" and _entries(tmp_path) == ["best.pt"]


def test_an_error_about_another_file_passes_unchanged(tmp_path: Path) -> None:
    """A writer that reads a source file (a shard reading raw frames) reports that file."""
    source = tmp_path / "raw" / "00001.jpg"

    def write(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(source.read_bytes())

    with pytest.raises(FileNotFoundError) as caught:
        fsio.atomic_write(tmp_path / "shard.tar", write, what="writing shard")
    assert caught.value.filename == str(source) and "writing shard" not in str(caught.value)
    assert _entries(tmp_path) == []


def test_atomic_write_many_is_all_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["index.parquet", "quarantine.jsonl", "manifest.json"]
    for name in names:
        (tmp_path / name).write_bytes(b"old " + name.encode())
    real_fsync = os.fsync
    synced: list[str] = []

    def fsync_failing_on_the_last(fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        synced.append(name)
        if name.startswith(".manifest.json.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_on_the_last)
    with pytest.raises(OSError, match="manifest.json"):
        fsio.atomic_write_many([(tmp_path / n, b"new") for n in names])
    assert len(synced) == 3  # the first two temporaries were complete, still none renamed
    for name in names:
        assert (tmp_path / name).read_bytes() == b"old " + name.encode()
    assert _entries(tmp_path) == sorted(names)
    monkeypatch.undo()
    fsio.atomic_write_many([(tmp_path / n, b"new") for n in names])
    assert {(tmp_path / n).read_bytes() for n in names} == {b"new"}


def test_pending_file_commit_and_discard(tmp_path: Path) -> None:
    final = tmp_path / "sub.zip"
    pending = fsio.PendingFile(final)
    pending.path.write_bytes(b"zip")
    assert not final.exists()
    assert pending.commit() == final and final.read_bytes() == b"zip"
    other = fsio.PendingFile(final)
    other.path.write_bytes(b"dropped")
    other.discard()
    other.discard()  # twice is fine
    assert final.read_bytes() == b"zip" and _entries(tmp_path) == ["sub.zip"]


# ----------------------------------------------------------------------------- concurrency
def test_temporaries_are_unique_per_thread_and_process(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    names: list[str] = []
    threads = [
        threading.Thread(target=lambda: names.append(fsio.temporary_path(path).name))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
        thread.join()  # one after the other: thread ids may then even be reused…
    names.append(fsio.temporary_path(path).name)
    assert all(fsio.TEMPORARY.match(n) and n.startswith(".state.json.tmp-") for n in names)
    assert all(n.split(".tmp-")[1].split("-")[0] == str(os.getpid()) for n in names)
    barrier, live = threading.Barrier(4), set()

    def concurrent() -> None:
        barrier.wait()  # …but never between live threads
        live.add(fsio.temporary_path(path).name)
        barrier.wait()

    threads = [threading.Thread(target=concurrent) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(live) == 4


def test_concurrent_thread_writers_and_readers_see_only_complete_files(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    payloads = [bytes([65 + i]) * (200_000 + 1000 * i) for i in range(6)]  # distinct lengths
    fsio.atomic_write_bytes(path, payloads[0])
    errors: list[BaseException] = []
    stop = threading.Event()
    seen: set[bytes] = set()

    def writer(data: bytes) -> None:
        try:
            for _ in range(15):
                fsio.atomic_write_bytes(path, data)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert seen <= set(payloads) and path.read_bytes() in payloads
    assert _entries(tmp_path) == ["manifest.json"]


def test_concurrent_process_writers(tmp_path: Path) -> None:
    path = tmp_path / "shared.bin"
    script = (
        "import sys; from pathlib import Path; from refsam.fsio import atomic_write_bytes\n"
        "for _ in range(40): atomic_write_bytes(Path(sys.argv[1]), sys.argv[2].encode() * 50_000)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), letter], env=env)
        for letter in "xyz"
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert path.read_bytes() in {c.encode() * 50_000 for c in "xyz"}
    assert _entries(tmp_path) == ["shared.bin"]


# ----------------------------------------------------------------------------- temporaries
def test_remove_temporaries_removes_only_temporaries(tmp_path: Path) -> None:
    stale = [
        ".step-00000004.pt.tmp-999999",  # a checkpoint writer's, before thread ids
        ".shard-000001.tar.tmp-4242-140234",  # a shard writer's (pid, thread)
        fsio.temporary_path(tmp_path / "index.parquet").name,  # this thread's
    ]
    kept = [".lock", "manifest.json", "x.tmp-12", ".x.tmp-abc", ".x.tmp-", "shard-000001.tar"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".dir.tmp-12").mkdir()  # not a file: kept
    removed = fsio.remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert _entries(tmp_path) == sorted([*kept, ".dir.tmp-12"])
    assert fsio.remove_temporaries(tmp_path / "missing") == []


# ----------------------------------------------------------------------------- hashing, csv
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 17])
def test_file_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert fsio.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert fsio.file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        fsio.file_sha256(tmp_path / "nothing.bin")


def test_write_csv_unions_columns_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "per_sequence.csv"
    rows = [{"video": "v1", "J": 0.5}, {"video": "v2", "F": 0.25, "J": 1}]
    fsio.write_csv(path, rows)
    assert path.read_bytes() == b"video,J,F\r\nv1,0.5,\r\nv2,1,0.25\r\n"
    with path.open(newline="") as handle:
        assert list(csv.DictReader(handle)) == [
            {"video": "v1", "J": "0.5", "F": ""},
            {"video": "v2", "J": "1", "F": "0.25"},
        ]
    fsio.write_csv(path, [])
    assert path.read_bytes() == b"empty\r\n"
    assert _entries(tmp_path) == ["per_sequence.csv"]


# ----------------------------------------------------------------------------- shard dirs
def test_split_dir_and_has_manifest(tmp_path: Path) -> None:
    folder = split_dir(tmp_path, "refcoco", "val")
    assert folder == tmp_path / "refcoco" / "val"
    assert split_dir(str(tmp_path), "refcoco", "val") == folder
    assert not has_manifest(folder)
    folder.mkdir(parents=True)
    (folder / MANIFEST).mkdir()  # a folder of that name is not a manifest
    assert not has_manifest(folder)
    (folder / MANIFEST).rmdir()
    write_manifest({"format": FORMAT}, folder / MANIFEST)
    assert has_manifest(folder)


def test_manifest_hash_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    write_manifest({"format": FORMAT, "shards": []}, tmp_path / MANIFEST)
    data = (tmp_path / MANIFEST).read_bytes()
    assert manifest_hash(tmp_path) == hashlib.sha256(data).hexdigest()
    assert manifest_hash(str(tmp_path)) == fsio.file_sha256(tmp_path / MANIFEST)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "not found; expected a shard directory written by `refsam ingest`"),
        (b'{"format": "refsam-shards/1",', "malformed JSON at line 1 column 30"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text|malformed JSON"),
        (b'{"format": "other/2"}', "expected a manifest with format 'refsam-shards/1'"),
        (b"[1, 2]", "expected a manifest with format"),
    ],
    ids=["missing", "truncated", "binary", "other-format", "not-an-object"],
)
def test_manifest_hash_names_a_missing_or_corrupt_manifest(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    if content is not None:
        (tmp_path / MANIFEST).write_bytes(content)
    with pytest.raises(DataError, match=reason) as caught:
        manifest_hash(tmp_path)
    assert isinstance(caught.value, UserError)  # the CLI: exit 2, one line
    assert str(caught.value).startswith(f"{tmp_path / MANIFEST}: ")


def test_data_manifests_skips_absent_splits_and_refuses_corrupt_ones(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.shards_root={tmp_path}"])
    assert data_manifests(cfg) == {}  # nothing ingested yet: nothing recorded
    split = cfg.eval.sets[0]
    folder = split_dir(tmp_path, split.dataset, split.split)
    folder.mkdir(parents=True)
    write_manifest({"format": FORMAT}, folder / MANIFEST)
    assert data_manifests(cfg) == {split.tag: manifest_hash(folder)}
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match=f"{folder / MANIFEST}: malformed JSON"):
        data_manifests(cfg)
