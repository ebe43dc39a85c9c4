"""Shards on an S3-compatible object store (a real server on loopback, tests/s3server.py):
ingest writes the same bytes as a local ingest, atomically and resumably, under a lock
that works without a shared file system; verify/show and the loaders read the bucket."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from refsam.cli import main
from refsam.data.index import read_index, read_quarantine
from refsam.data.loader import build_train_loader, iter_eval_videos
from refsam.data.lock import output_lock
from refsam.data.shards import ingest
from refsam.errors import LockError, UserError
from refsam.storage import as_path, is_remote
from tests.data.test_shards import SLOW_INGEST

DAVIS = ("ref-davis17", "valid", "ref-davis")
COCOG = ("refcocog", "train", "coco")


def _objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"].removeprefix(prefix)] = body
    return found


def _local(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _published(tree: dict[str, bytes]) -> dict[str, bytes]:
    """What readers see: the shards, index, manifest and quarantine (not the state records)."""
    return {k: v for k, v in tree.items() if not any(part.startswith(".") for part in k.split("/"))}


def test_ingest_to_a_bucket_writes_the_local_bytes_and_readers_stream_them(
    s3, demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_raw = demo_root / "raw"
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/refsam/shards"
    for dataset, split, raw in (DAVIS, COCOG):
        ingest(dataset, split, demo_raw / raw, tmp_path, shard_size=2, progress=False)
        summary = ingest(dataset, split, demo_raw / raw, as_path(url), shard_size=2, workers=2,
                         progress=False)  # fmt: skip
        assert summary.shards_written == summary.shards > 1
    remote = _objects(s3, bucket, "refsam/shards/")
    local = _local(tmp_path)
    assert _published(remote) == _published(local) and _published(remote)
    assert not [k for k in remote if ".tmp-" in k or k.endswith(".lock")]
    # the plan cache works against the bucket: a second run rewrites nothing
    again = ingest(*COCOG[:2], demo_raw / COCOG[2], as_path(url), shard_size=2, progress=False)
    assert again.shards_skipped == again.shards and again.shards_written == 0

    assert main(["shards", "verify", url]) == 0
    assert main(["shards", "show", f"{url}/refcocog/train"]) == 0
    shown = capsys.readouterr().out
    assert "ok   s3://" in shown and "refcocog/train" in shown

    # training batches and evaluation videos streamed from the bucket equal the local ones
    def batches(root, workers: int = 0) -> list:
        dirs = [as_path(root) / "refcocog" / "train"]
        return list(build_train_loader(dirs, img_size=32, frames_per_clip=2, batch_size=3,
                                       seed=3, world_size=2, rank=1, num_workers=workers))  # fmt: skip

    ours, theirs = batches(url, workers=2), batches(tmp_path, workers=2)
    assert [b.meta for b in ours] == [b.meta for b in theirs] and ours
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(ours, theirs, strict=True))

    # exact resume from the bucket: skipping the batches a killed run consumed
    def resumed(root, skip: int) -> list:
        dirs = [as_path(root) / "refcocog" / "train"]
        return list(build_train_loader(dirs, img_size=32, frames_per_clip=2, batch_size=2,
                                       seed=3, epoch=1, skip=skip))  # fmt: skip

    whole = resumed(tmp_path, 0)
    assert [b.meta for b in resumed(url, 3)] == [b.meta for b in whole[3:]] and whole[3:]
    remote_videos = list(iter_eval_videos(as_path(url) / "ref-davis17" / "valid"))
    local_videos = list(iter_eval_videos(tmp_path / "ref-davis17" / "valid"))
    assert [(v.video, v.jpeg_bytes) for v in remote_videos] == [
        (v.video, v.jpeg_bytes) for v in local_videos
    ]

    # damage in the bucket: verify names the object, a re-ingest repairs exactly that shard
    client = s3.client()
    key = "refsam/shards/refcocog/train/shard-000001.tar"
    client.put_object(Bucket=bucket, Key=key, Body=remote[key.removeprefix("refsam/shards/")][:-7])
    assert main(["shards", "verify", url]) == 1
    assert "shard-000001.tar" in capsys.readouterr().out
    repaired = ingest(*COCOG[:2], demo_raw / COCOG[2], as_path(url), shard_size=2, progress=False)
    assert repaired.shards_written == 1
    assert _published(_objects(s3, bucket, "refsam/shards/")) == _published(local)


def test_unknown_bucket_and_unknown_scheme_are_clear_errors(s3, demo_root: Path) -> None:
    demo_raw = demo_root / "raw"
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        ingest(*DAVIS[:2], demo_raw / DAVIS[2], as_path("s3://no-such-bucket/x"), progress=False)
    with pytest.raises(UserError, match="nosuchfs://bucket/x: no storage backend"):
        as_path("nosuchfs://bucket/x")
    assert main(["shards", "verify", "s3://no-such-bucket/x"]) == 2


def test_object_store_lock_refuses_a_live_owner_and_takes_over_a_dead_one(s3) -> None:
    root = as_path(f"s3://{s3.new_bucket()}/shards/x/y")
    assert is_remote(root)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = {"pid": sleeper.pid, "host": socket.gethostname(), "since": 1_700_000_000}
        (root / ".lock").write_bytes(json.dumps(owner).encode())
        refused = pytest.raises(LockError, match=rf"process {sleeper.pid} on .* since 2023")
        with refused, output_lock(root):
            pass
        other_host = {**owner, "host": "some-other-node"}
        (root / ".lock").write_bytes(json.dumps(other_host).encode())
        with pytest.raises(LockError, match="some-other-node"), output_lock(root):
            pass
        (root / ".lock").write_bytes(json.dumps(owner).encode())
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(root) as lock:  # the owner is dead now: taken over
        assert json.loads(lock.read_bytes())["pid"] != sleeper.pid
        with output_lock(root):  # re-entrant within the process
            pass
        assert lock.exists()
    assert not (root / ".lock").exists()


@pytest.mark.slow
def test_sigkill_during_an_ingest_to_the_bucket_then_rerun_is_byte_identical(
    s3, demo_root: Path, tmp_path: Path
) -> None:
    import os

    demo_raw = demo_root / "raw"

    raw = demo_raw / COCOG[2]
    ingest(*COCOG[:2], raw, tmp_path, shard_size=1, progress=False)
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/shards"
    states = as_path(url) / "refcocog" / "train" / ".state"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(raw), url],
                            env={**os.environ, **s3.env})  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if states.exists() and len(list(states.glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = _objects(s3, bucket, "shards/refcocog/train/")
    assert "manifest.json" not in left, "the run finished before it was killed"
    assert json.loads(left[".lock"])["pid"] == proc.pid  # the dead owner's lock is left
    summary = ingest(*COCOG[:2], raw, as_path(url), shard_size=1, progress=False)
    assert summary.shards_skipped >= 2 and summary.shards_written >= 1
    after = _objects(s3, bucket, "shards/")
    assert _published(after) == _published(_local(tmp_path))
    assert not [k for k in after if ".tmp-" in k or k.endswith(".lock")]


def test_raw_data_in_a_bucket_ingests_to_the_same_shards(
    s3, demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.new_bucket()
    raw = as_path(f"s3://{bucket}/raw")
    for _dataset, _split, folder in (DAVIS, COCOG):
        raw.fs.put(str(demo_root / "raw" / folder), f"{bucket}/raw/{folder}", recursive=True)
    out = f"s3://{bucket}/shards"
    for dataset in ("ref-davis17", "refcocog"):
        folder = DAVIS[2] if dataset == "ref-davis17" else COCOG[2]
        args = ["ingest", "--dataset", dataset, "--raw", f"{raw}/{folder}", "--out", out]
        assert main([*args, "--shard-size", "2", "--workers", "2"]) == 0
        local = ["ingest", "--dataset", dataset, "--raw", str(demo_root / "raw" / folder)]
        assert main([*local, "--out", str(tmp_path), "--shard-size", "2"]) == 0
    assert "quarantined items by reason: none" in capsys.readouterr().out
    remote = _objects(s3, bucket, "shards/")
    content = {k: v for k, v in _published(remote).items() if not k.endswith("manifest.json")}
    assert content == {
        k: v for k, v in _published(_local(tmp_path)).items() if not k.endswith("manifest.json")
    }
    manifest = json.loads(remote["refcocog/train/manifest.json"])
    assert manifest["source"]["root"] == f"s3://{bucket}/raw/coco"
    # the raw fingerprint follows the objects: a changed caption file re-plans the split
    again = ingest(*COCOG[:2], raw / "coco", as_path(out), shard_size=2, progress=False)
    assert again.shards_written == 0
    refs = raw / "coco" / "refcocog" / "instances.json"
    refs.write_bytes(refs.read_bytes() + b"\n")
    changed = ingest(*COCOG[:2], raw / "coco", as_path(out), shard_size=2, progress=False)
    assert changed.shards_written == changed.shards
    # a frame missing in the bucket is quarantined naming it, the rest is ingested
    video = read_index(tmp_path / "ref-davis17" / "valid").column("video")[0].as_py()
    (raw / "ref-davis" / "DAVIS" / "JPEGImages" / "480p" / video / "00001.jpg").unlink()
    summary = ingest(*DAVIS[:2], raw / "ref-davis", as_path(out), shard_size=2, progress=False)
    assert summary.quarantine_by_reason == {"missing_frame": 1}
    (item,) = read_quarantine(as_path(out) / "ref-davis17" / "valid")
    assert item["video"] == video and "00001" in item["message"]


def test_score_reads_ground_truth_and_predictions_from_a_bucket(
    s3, demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.eval.test_score_cli import score, write_mevis_predictions

    split = demo_root / "heldout" / "mevis" / "valid"
    write_mevis_predictions(split, tmp_path / "pred")
    bucket = s3.new_bucket()
    fs = as_path(f"s3://{bucket}").fs
    fs.put(str(split), f"{bucket}/gt", recursive=True)
    fs.put(str(tmp_path / "pred"), f"{bucket}/pred", recursive=True)
    local = score(
        capsys, "--pred", str(tmp_path / "pred"), "--gt", str(split), "--protocol", "mevis"
    )
    remote = score(capsys, "--pred", f"s3://{bucket}/pred", "--gt", f"s3://{bucket}/gt",
                   "--protocol", "mevis")  # fmt: skip
    assert remote == local and local["J&F"] == 1.0
    missing = main(["score", "--pred", str(tmp_path / "pred"), "--gt", f"s3://{bucket}/nothing",
                    "--protocol", "mevis"])  # fmt: skip
    assert missing == 2 and f"s3://{bucket}/nothing" in capsys.readouterr().err


def test_a_shard_gone_from_the_bucket_fails_after_bounded_retries_naming_it(
    s3, demo_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = as_path(f"s3://{s3.new_bucket()}/shards")
    ingest(*COCOG[:2], demo_root / "raw" / COCOG[2], url, shard_size=2, progress=False)
    shard_dir = url / "refcocog" / "train"
    loader = build_train_loader([shard_dir], img_size=32, frames_per_clip=1, batch_size=2, seed=0)
    (shard_dir / "shard-000001.tar").unlink()  # after the loader listed it
    with pytest.raises(OSError, match=r"gave up after 4 attempts.*shard-000001\.tar"):
        list(loader)
    assert sum("retry" in r.getMessage() for r in caplog.records) == 3
