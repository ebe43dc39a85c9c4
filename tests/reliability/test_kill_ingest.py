"""SIGKILL ``refsam ingest`` at many points, then re-run: the result is byte-identical to an
uninterrupted run, and no temporary file or stale lock blocks the next run.

The killed runs are real subprocesses on a slowed-down disk (``os.fsync`` and ``os.replace``
sleep a little in the child, nothing else changes), killed either at a seeded random delay
or as soon as the output shows a given moment (a shard temporary open, a state record being
written, the index/manifest temporaries, the index renamed but not yet the manifest).
After every kill, each file under its final name must already be exactly the reference
bytes (never a partial file), and the re-run must complete the output.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from refsam.data.index import verify
from refsam.data.lock import LOCK_NAME
from refsam.data.shards import STATE_DIR, ingest
from tests.reliability.helpers import copy_raw, snapshot, temporaries

DATASET, SPLIT, SHARD_SIZE = "refcocog", "train", 1  # 8 one-image shards in the tiny demo

_CHILD = """
import os, sys, time
from pathlib import Path
real_fsync, real_replace = os.fsync, os.replace
def slow_fsync(fd):
    time.sleep(0.03)
    return real_fsync(fd)
def slow_replace(src, dst):
    time.sleep(0.03)
    return real_replace(src, dst)
os.fsync, os.replace = slow_fsync, slow_replace  # a slow disk; the code under test is unchanged
from refsam.data.shards import ingest
dataset, split, raw, out, size, workers = sys.argv[1:7]
ingest(dataset, split, Path(raw), Path(out), shard_size=int(size), workers=int(workers),
       progress=False)
"""

Trigger = Callable[[Path], bool]


def _any(pattern: str) -> Trigger:
    return lambda d: any(d.glob(pattern))


TRIGGERS: dict[str, Trigger] = {
    "lock-taken": lambda d: (d / LOCK_NAME).exists(),
    "inside-first-shard-write": _any(".shard-*.tmp-*"),
    "inside-state-record-write": _any(f"{STATE_DIR}/.*.tmp-*"),
    "between-shards": lambda d: len(list((d / STATE_DIR).glob("*.json"))) >= 3,
    "inside-last-shard-write": _any(".shard-000007.tar.tmp-*"),
    "index-temporary-written": _any(".index.parquet.tmp-*"),
    "manifest-temporary-written": _any(".manifest.json.tmp-*"),
    "index-renamed-manifest-not": lambda d: (
        (d / "index.parquet").exists() and not (d / "manifest.json").exists()
    ),
}


def _start(raw: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    args = [DATASET, SPLIT, str(raw), str(out), str(SHARD_SIZE), str(workers)]
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args], start_new_session=True, cwd=Path.cwd()
    )


def _kill_when(proc: subprocess.Popen, shard_dir: Path, trigger: Trigger | float) -> bool:
    """SIGKILL the run at the trigger (a predicate or a delay in seconds); True if killed."""
    deadline = time.monotonic() + (trigger if isinstance(trigger, float) else 60.0)
    while proc.poll() is None:
        if time.monotonic() >= deadline or (
            not isinstance(trigger, float) and shard_dir.is_dir() and trigger(shard_dir)
        ):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def _cleanup_orphans(proc: subprocess.Popen) -> None:
    """Worker processes of a killed process pool may outlive it: end them (our session only)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _check_after_kill(shard_dir: Path, reference: dict[str, bytes]) -> None:
    """A killed run leaves only complete files under final names (the reference bytes)."""
    for name, data in snapshot(shard_dir).items():
        assert data == reference[name], f"{name} is not complete after the kill"


def _rerun_and_compare(raw: Path, out: Path, reference: dict[str, bytes]) -> None:
    ingest(DATASET, SPLIT, raw, out, shard_size=SHARD_SIZE, progress=False)
    shard_dir = out / DATASET / SPLIT
    assert snapshot(shard_dir) == reference
    assert temporaries(out) == []
    assert not (shard_dir / LOCK_NAME).exists()
    assert verify(shard_dir) == []
    states = sorted(p.name for p in (shard_dir / STATE_DIR).glob("*.json"))
    assert states == sorted(f"{n}.json" for n in reference if n.startswith("shard-"))


@pytest.fixture(scope="module")
def setup(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("kill")
    raw = copy_raw(demo_root, base, DATASET)
    ingest(DATASET, SPLIT, raw, base / "reference", shard_size=SHARD_SIZE, progress=False)
    reference = snapshot(base / "reference" / DATASET / SPLIT)
    assert sum(n.startswith("shard-") for n in reference) == 8
    return raw, reference


SURVIVED: list[str] = []


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(TRIGGERS))
def test_kill_at_a_given_moment(setup, tmp_path: Path, point: str) -> None:
    raw, reference = setup
    out = tmp_path / "out"
    proc = _start(raw, out)
    killed = _kill_when(proc, out / DATASET / SPLIT, TRIGGERS[point])
    assert killed, f"the run finished before reaching {point}"
    _check_after_kill(out / DATASET / SPLIT, reference)
    _rerun_and_compare(raw, out, reference)
    SURVIVED.append(point)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "workers"), [*((s, 1) for s in range(8)), (8, 2), (9, 2)])
def test_kill_at_a_random_moment(setup, tmp_path: Path, seed: int, workers: int) -> None:
    raw, reference = setup
    out = tmp_path / "out"
    delay = random.Random(seed).uniform(0.2, 1.9)
    proc = _start(raw, out, workers)
    try:
        killed = _kill_when(proc, out / DATASET / SPLIT, delay)
        if killed:
            _check_after_kill(out / DATASET / SPLIT, reference)
        _rerun_and_compare(raw, out, reference)
    finally:
        _cleanup_orphans(proc)
    if killed:
        SURVIVED.append(f"random seed {seed} ({delay:.2f} s, {workers} worker(s))")


@pytest.mark.slow
def test_killed_three_times_in_a_row_then_completed(setup, tmp_path: Path) -> None:
    """Each re-run resumes from what the killed ones left and is killed again."""
    raw, reference = setup
    out = tmp_path / "out"
    shard_dir = out / DATASET / SPLIT
    for kill in range(3):
        before = len(list((shard_dir / STATE_DIR).glob("*.json")))
        proc = _start(raw, out)
        assert _kill_when(proc, shard_dir, lambda d, b=before: _states(d) >= b + 2)
        _check_after_kill(shard_dir, reference)
        SURVIVED.append(f"chained kill {kill + 1}")
    assert _states(shard_dir) >= 6  # every run kept the complete shards of the previous ones
    _rerun_and_compare(raw, out, reference)


@pytest.mark.slow
def test_killed_parallel_ingest_leaves_no_orphan_writers(setup, tmp_path: Path) -> None:
    """With ``--workers 2`` the shard writers are pool processes: when the ingest is killed
    they die with it (before the fix they went on writing shards next to the next run)."""
    raw, reference = setup
    out = tmp_path / "out"
    shard_dir = out / DATASET / SPLIT
    proc = _start(raw, out, workers=2)
    try:
        assert _kill_when(proc, shard_dir, TRIGGERS["inside-first-shard-write"])
        before = sorted(str(p) for p in shard_dir.rglob("*"))
        time.sleep(1.0)  # an orphan would write a shard or two in this time
        assert sorted(str(p) for p in shard_dir.rglob("*")) == before
        states = subprocess.run(
            ["ps", "-s", str(proc.pid), "-o", "stat="], capture_output=True, text=True
        ).stdout.split()
        assert all(state.startswith("Z") for state in states), states  # dead (not reaped)
        _check_after_kill(shard_dir, reference)
        _rerun_and_compare(raw, out, reference)
    finally:
        _cleanup_orphans(proc)
    SURVIVED.append("parallel ingest killed inside a shard write")


def _states(shard_dir: Path) -> int:
    return len(list((shard_dir / STATE_DIR).glob("*.json")))


def test_report_kill_points(request: pytest.FixtureRequest) -> None:
    """Prints the count for docs/reliability.md (runs last in this module)."""
    print(f"\nkill points survived: {len(SURVIVED)}: {', '.join(SURVIVED)}")
