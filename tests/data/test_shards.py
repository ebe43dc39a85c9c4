"""Shard writer: exact format, determinism across workers, atomic + resumable, lock, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.data.index import read_index, read_manifest, read_quarantine
from refsam.data.lock import output_lock
from refsam.data.shards import STATE_DIR, ingest, shard_paths
from refsam.data.types import shard_key
from refsam.errors import LockError


def _tree(shard_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_paths(shard_dir)}


def test_members_are_sorted_fixed_metadata_and_original_jpeg_bytes(
    demo_raw: Path, ingested
) -> None:
    out, _ = ingested
    shard_dir = out / "ref-youtube-vos" / "train"
    seen_keys = []
    for path in shard_paths(shard_dir):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            for m in members:
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
            assert names == sorted(names)
            for key in keys:
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert meta["key"] == key == shard_key(meta["video"])
                assert set(meta) >= {
                    "dataset",
                    "split",
                    "video",
                    "frame_names",
                    "height",
                    "width",
                    "objects",
                    "expressions",
                    "sources",
                    "void",
                }
                for name in meta["frame_names"]:
                    raw = (
                        demo_raw
                        / "ref-youtube-vos"
                        / "train"
                        / "JPEGImages"
                        / meta["video"]
                        / f"{name}.jpg"
                    )
                    assert tar.extractfile(f"{key}.{name}.jpg").read() == raw.read_bytes()
                    assert meta["sources"][str(raw.relative_to(demo_raw / "ref-youtube-vos"))]
                for obj in meta["objects"]:
                    assert len(obj["masks"]) == len(meta["frame_names"])
                    assert all(m is None or set(m) == {"size", "counts"} for m in obj["masks"])
            seen_keys += keys
    assert seen_keys == sorted(seen_keys)


def test_shard_key_is_dot_free() -> None:
    assert shard_key("video.v2/part") == "video_v2_part"


def test_index_and_manifest_agree_with_shards(ingested) -> None:
    out, summaries = ingested
    shard_dir = out / "mevis" / "train"
    index = read_index(shard_dir).to_pylist()
    manifest = read_manifest(shard_dir)
    assert {r["shard"] for r in index} == {s["name"] for s in manifest["shards"]}
    assert (
        sum(s["expressions"] for s in manifest["shards"])
        == len(index)
        == summaries[("mevis", "train")].expressions
    )
    assert set(index[0]) == {
        "dataset",
        "split",
        "video",
        "exp_id",
        "text",
        "obj_ids",
        "annotation_set",
        "n_frames",
        "height",
        "width",
        "shard",
        "key",
    }
    assert (
        manifest["code_version"]
        and manifest["source"]["fingerprint"]
        and manifest["card"]["name"] == "mevis"
    )
    assert read_quarantine(shard_dir) == []


@pytest.mark.parametrize("dataset", ["ref-davis17", "refcocog"])
def test_bytes_do_not_depend_on_workers(demo_raw: Path, tmp_path: Path, dataset: str) -> None:
    root = demo_raw / ("ref-davis" if dataset == "ref-davis17" else "coco")
    split = "valid" if dataset == "ref-davis17" else "train"
    one = ingest(dataset, split, root, tmp_path / "w1", shard_size=1, workers=1, progress=False)
    two = ingest(dataset, split, root, tmp_path / "w2", shard_size=1, workers=2, progress=False)
    thr = ingest(
        dataset,
        split,
        root,
        tmp_path / "t2",
        shard_size=1,
        workers=2,
        executor="thread",
        progress=False,
    )
    assert one.shards == two.shards == thr.shards > 1
    a = _tree(tmp_path / "w1" / dataset / split)
    assert a == _tree(tmp_path / "w2" / dataset / split) == _tree(tmp_path / "t2" / dataset / split)
    for name in ("index.parquet", "quarantine.jsonl"):
        assert (tmp_path / "w1" / dataset / split / name).read_bytes() == (
            tmp_path / "w2" / dataset / split / name
        ).read_bytes()


def test_second_run_is_a_noop_and_damage_is_repaired(demo_raw: Path, tmp_path: Path) -> None:
    root, out = demo_raw / "mevis", tmp_path / "out"
    first = ingest("mevis", "train", root, out, shard_size=1, progress=False)
    shard_dir = out / "mevis" / "train"
    reference = _tree(shard_dir)
    stamps = {p.name: p.stat().st_mtime_ns for p in shard_paths(shard_dir)}
    again = ingest("mevis", "train", root, out, shard_size=1, progress=False)
    assert (again.shards_written, again.shards_skipped) == (0, first.shards)
    assert {p.name: p.stat().st_mtime_ns for p in shard_paths(shard_dir)} == stamps
    # damage: a corrupted complete shard, a deleted shard, a half-written temp, a stale extra shard
    shards = shard_paths(shard_dir)
    with shards[0].open("r+b") as handle:
        handle.seek(600)
        handle.write(b"X")
    shards[1].unlink()
    (shard_dir / ".shard-000000.tar.tmp-99999").write_bytes(b"partial")
    (shard_dir / "shard-000099.tar").write_bytes(b"stale")
    repaired = ingest("mevis", "train", root, out, shard_size=1, progress=False)
    assert (repaired.shards_written, repaired.shards_skipped) == (2, first.shards - 2)
    assert _tree(shard_dir) == reference
    assert sorted(p.name for p in shard_dir.iterdir() if p.name != STATE_DIR) == sorted(
        [*reference, "index.parquet", "manifest.json", "quarantine.jsonl"]
    )


def test_other_shard_size_rewrites_everything_without_duplicates(
    demo_raw: Path, tmp_path: Path
) -> None:
    root, out = demo_raw / "coco", tmp_path / "out"
    ingest("refcoco", "train", root, out, shard_size=1, progress=False)
    summary = ingest("refcoco", "train", root, out, shard_size=3, progress=False)
    shard_dir = out / "refcoco" / "train"
    assert len(shard_paths(shard_dir)) == summary.shards == 3
    keys = []
    for path in shard_paths(shard_dir):
        with tarfile.open(path) as tar:
            keys += [m.name for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(keys) == len(set(keys)) == summary.videos


SLOW_INGEST = """
import sys, time
from pathlib import Path
import refsam.data.shards as shards
from refsam.storage import as_path
original = shards.write_shard
def slow(plan, task):
    result = original(plan, task)
    time.sleep(0.4)
    return result
shards.write_shard = slow
shards.ingest("refcocog", "train", Path(sys.argv[1]), as_path(sys.argv[2]), shard_size=1,
              progress=False)
"""
"""A refcocog ingest (argv: raw root, output root or URL) that sleeps after each shard."""


@pytest.mark.slow
def test_sigkill_half_way_then_rerun_is_byte_identical(demo_raw: Path, tmp_path: Path) -> None:
    root = demo_raw / "coco"
    ingest("refcocog", "train", root, tmp_path / "ref", shard_size=1, progress=False)
    out = tmp_path / "killed"
    shard_dir = out / "refcocog" / "train"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(root), str(out)])
    try:
        deadline = time.monotonic() + 60
        while len(list((shard_dir / STATE_DIR).glob("*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (shard_dir / "manifest.json").exists(), "the run finished before it was killed"
    assert (
        json.loads((shard_dir / ".lock").read_text())["pid"] == proc.pid
    )  # dead owner's lock left behind
    summary = ingest("refcocog", "train", root, out, shard_size=1, progress=False)
    assert summary.shards_skipped >= 2 and summary.shards_written >= 1
    assert _tree(shard_dir) == _tree(tmp_path / "ref" / "refcocog" / "train")
    assert (shard_dir / "index.parquet").read_bytes() == (
        tmp_path / "ref" / "refcocog" / "train" / "index.parquet"
    ).read_bytes()
    assert not (shard_dir / ".lock").exists()


def test_lock_of_a_live_process_refuses_and_a_dead_one_is_taken_over(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(
            json.dumps({"pid": sleeper.pid, "host": os.uname().nodename})
        )
        with pytest.raises(LockError, match=str(sleeper.pid)), output_lock(tmp_path):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(tmp_path) as lock:  # the owner is dead now: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_cli_ingest_verify_show(
    demo_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shards"
    assert (
        main(
            [
                "ingest",
                "--dataset",
                "ref-davis17",
                "--raw",
                str(demo_raw / "ref-davis"),
                "--out",
                str(out),
                "--shard-size",
                "1",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert (
        "ref-davis17/train" in text
        and "ref-davis17/valid" in text
        and "quarantined items by reason: none" in text
    )
    assert main(["shards", "verify", str(out)]) == 0
    assert main(["shards", "show", str(out / "ref-davis17" / "valid")]) == 0
    shown = capsys.readouterr().out
    manifest = read_manifest(out / "ref-davis17" / "valid")
    assert f"{manifest['counts']['expressions']}" in shown and "ref-davis17/valid" in shown
    victim = out / "ref-davis17" / "valid" / "shard-000001.tar"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    assert main(["shards", "verify", str(out)]) == 1
    assert "shard-000001.tar" in capsys.readouterr().out
    assert (
        main(
            [
                "ingest",
                "--dataset",
                "ref-davis17",
                "--raw",
                str(tmp_path / "missing"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert main(["ingest", "--raw", str(demo_raw), "--out", str(out)]) == 2


@pytest.mark.slow
def test_cli_ingest_all_demo(
    demo_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "ingest",
                "--all",
                "--raw",
                str(demo_raw),
                "--out",
                str(tmp_path / "s"),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.count("\n") > 19 and "quarantined items by reason: none" in text
    assert len(list((tmp_path / "s").glob("*/*/manifest.json"))) == 19
