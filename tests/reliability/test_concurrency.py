"""Two writers on one output root: the second fails clearly (LockError, exit 2 naming the
owner's pid); a dead owner's lock is taken over; racing takers never both hold the lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.data.lock import LOCK_NAME, output_lock
from refsam.data.shards import ingest
from refsam.errors import LockError
from tests.reliability.helpers import copy_raw, snapshot, temporaries

_SLOW_INGEST = """
import sys, time
from pathlib import Path
import refsam.data.shards as shards
original = shards.write_shard
def slow(plan, task):
    time.sleep(0.3)
    return original(plan, task)
shards.write_shard = slow
shards.ingest("refcocog", "train", Path(sys.argv[1]), Path(sys.argv[2]), shard_size=1,
              progress=False)
"""

# N processes take the lock in a loop; inside, an O_EXCL marker proves nobody else is inside.
_STRESS = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from importlib import import_module
lock = import_module(sys.argv[4])
root, start = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # everybody starts together
held = clashes = 0
while time.time() < start + 1.5:
    try:
        with lock.output_lock(root):
            try:
                fd = os.open(root / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                clashes += 1
                continue
            held += 1
            time.sleep(0.0005)
            os.close(fd)
            os.unlink(root / "inside")
    except Exception:
        pass
print(held, clashes)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _race(root: Path, module: str, path: str = "", workers: int = 6) -> tuple[int, int]:
    """(times the lock was held, times two holders overlapped) over 1.5 s of contention."""
    (root / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STRESS, str(root), str(start), path, module],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    counts = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def test_racing_takers_never_hold_the_lock_together(tmp_path: Path) -> None:
    held, clashes = _race(tmp_path, "refsam.data.lock")
    assert held > 0
    assert clashes == 0, f"{clashes} times two processes held the lock at once"
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_ingest_fails_clearly_while_the_first_runs_then_takes_over(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    out = tmp_path / "out"
    shard_dir = out / "refcocog" / "train"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_INGEST, str(raw), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not (shard_dir / LOCK_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the owner has written its pid
        argv = ["ingest", "--dataset", "refcocog", "--split", "train"]
        code = main([*argv, "--raw", str(raw), "--out", str(out), "--shard-size", "1"])
        err = capsys.readouterr().err.strip()
        assert first.poll() is None, "the first ingest finished too early for this test"
        assert code == 2
        assert len(err.splitlines()) == 1
        assert f"locked by process {first.pid}" in err and str(shard_dir) in err
        with pytest.raises(LockError, match=str(first.pid)):
            ingest("refcocog", "train", raw, out, shard_size=1, progress=False)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the owner died (its pid is still in the lock file): the next run takes over
    assert json.loads((shard_dir / LOCK_NAME).read_text())["pid"] == first.pid
    summary = ingest("refcocog", "train", raw, out, shard_size=1, progress=False)
    assert summary.shards == 8
    ingest("refcocog", "train", raw, tmp_path / "ref", shard_size=1, progress=False)
    assert snapshot(shard_dir) == snapshot(tmp_path / "ref" / "refcocog" / "train")
    assert temporaries(out) == [] and not (shard_dir / LOCK_NAME).exists()


def test_two_ingests_started_together_one_wins_one_fails_or_waits(
    demo_root: Path, tmp_path: Path
) -> None:
    """Started at the same moment through the CLI: each exits 0 (it ran alone, before or after
    the other) or 2 with the lock message — never 1, and the result is complete."""
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "refsam.cli", "ingest", "--dataset", "refcocog"]
    cmd += ["--split", "train", "--raw", str(raw), "--out", str(out), "--shard-size", "1"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert "is locked by process" in err.strip().splitlines()[-1]
    ingest("refcocog", "train", raw, tmp_path / "ref", shard_size=1, progress=False)
    assert snapshot(out / "refcocog" / "train") == snapshot(tmp_path / "ref" / "refcocog" / "train")


def test_live_owner_named_in_the_file_is_refused_dead_one_taken_over(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = {"pid": sleeper.pid, "host": socket.gethostname()}
        (tmp_path / LOCK_NAME).write_text(json.dumps(record))
        refused = pytest.raises(LockError, match=f"locked by process {sleeper.pid}")
        with refused, output_lock(tmp_path):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with output_lock(tmp_path):  # re-entrant in the owning process
            pass
        assert lock.exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_empty_or_garbage_lock_file_of_a_crashed_run_is_taken_over(tmp_path: Path) -> None:
    for content in ("", "{not json", "[1, 2]"):
        (tmp_path / LOCK_NAME).write_text(content)
        with output_lock(tmp_path) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
