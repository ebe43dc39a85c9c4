"""SIGKILL ``refsam train`` at many points, then ``--resume auto``: the run ends with exactly
the weights, optimiser, schedule, RNG and loader state of an uninterrupted run (CPU,
``torch.equal`` per tensor), resumes from the newest complete checkpoint (never a torn one),
takes over the dead run's lock and leaves no temporary behind.

The killed runs are real ``refsam train`` subprocesses on a slowed-down disk (``os.fsync`` of
a temporary sleeps in the child, nothing else changes), killed at a named moment (lock
taken, inside a checkpoint write, inside the ``best.pt`` write, …) or at a seeded random
delay. After each kill, every checkpoint under a final name must already be complete and
equal to the uninterrupted run's checkpoint of the same step. A separate test plants torn
checkpoints (truncated, garbage) and leftover temporaries: ``--resume auto`` skips them with
a warning naming each file and resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from refsam.data.lock import LOCK_NAME
from refsam.data.shards import ingest
from refsam.data.sources import raw_dir_name
from refsam.modeling.checkpoint import load_checkpoint
from refsam.train.checkpoint import BEST, check_resumable, list_step_checkpoints
from tests.reliability.helpers import temporaries

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
STEPS = 4  # smoke.yaml: 2 stages × 2 steps, a checkpoint after every step
COMPARED = ("model", "optimizer", "scheduler", "progress", "rng")

# A slow disk: fsync of a temporary sleeps, so each checkpoint write lasts a while.
_CHILD = """
import os, sys, time
delay = float(os.environ.get("SLOW_FSYNC_S", "0.2"))
real_fsync = os.fsync
def slow_fsync(fd):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if ".tmp-" in os.path.basename(name):
        time.sleep(delay)
    return real_fsync(fd)
os.fsync = slow_fsync
from refsam.cli import main
sys.exit(main(sys.argv[1:]))
"""

Trigger = Callable[[Path], bool]


def _any(pattern: str) -> Trigger:
    return lambda run: any((run / "checkpoints").glob(pattern))


TRIGGERS: dict[str, Trigger] = {
    "lock-taken-before-any-checkpoint": lambda run: (run / LOCK_NAME).exists(),
    "inside-first-checkpoint-write": _any(".step-00000001.pt.tmp-*"),
    "between-stages": _any("step-00000002.pt"),
    "inside-stage-2-checkpoint-write": _any(".step-00000003.pt.tmp-*"),
    "inside-best-write": _any(f".{BEST}.tmp-*"),
}
SURVIVED: list[str] = []


def train_args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """``refsam train`` on smoke.yaml over the tiny shards, into ``out/smoke``."""
    sets = [
        f"data.shards_root={setup['shards']}",
        f"data.heldout_root={setup['heldout']}",
        f"train.output_dir={out}",
        "train.device=cpu",
        "eval.sets=[]",
        "train.checkpoint_every=1",
        "train.keep_last=10",
    ]
    args = ["train", "--config", str(SMOKE)]
    for item in sets:
        args += ["--set", item]
    return [*args, "--no-tracking", *extra]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # as in-process runs (quiet_cpu)
    env.update(extra)
    return env


def start_child(args: list[str], **env: str) -> subprocess.Popen:
    """``refsam <args>`` in a child on a slow disk; its stderr goes to a temporary file
    (``child_log``), never to an unread pipe that could fill and block it."""
    log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as proc)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        cwd=ROOT,
        env=child_env(**env),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def child_log(proc: subprocess.Popen) -> str:
    """The end of a child's stderr (for assertion messages)."""
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def run_child(args: list[str], **env: str) -> str:
    """``refsam <args>`` to the end in a child; its stderr log. Compared runs go through a
    child: threads left in the pytest process by earlier tests (Prefect's events websocket
    keep-alive, dask's IO loop) draw from the global ``random`` whose state checkpoints save."""
    proc = start_child(args, **env)
    code = proc.wait(timeout=600)
    log = child_log(proc)
    assert code == 0, log
    return log


def kill_when(proc: subprocess.Popen, run: Path, trigger: Trigger | float) -> bool:
    """SIGKILL the run at the trigger (a predicate on the run dir, or seconds after the
    lock appeared); True if it was killed (False: it ended first)."""
    started: float | None = None
    deadline = time.monotonic() + 120.0
    while proc.poll() is None and time.monotonic() < deadline:
        if run.is_dir():
            if isinstance(trigger, float):
                if started is None and (run / LOCK_NAME).exists():
                    started = time.monotonic()
                fire = started is not None and time.monotonic() - started >= trigger
            else:
                fire = trigger(run)
            if fire:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.wait(timeout=120)
    return proc.returncode == -signal.SIGKILL


def state_of(path: Path) -> dict[str, Any]:
    payload = load_checkpoint(path)
    return {key: payload[key] for key in COMPARED}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors by ``torch.equal`` (same dtype, shape and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@contextlib.contextmanager
def quiet_cpu() -> Iterator[None]:
    """One torch thread in this process (the children get OMP_NUM_THREADS=1): the same float
    sums in every process, and no OpenMP spinning on 2 shared cores (with 2 threads under
    load a 4-step smoke run took 46 s instead of 5 s). Hugging Face stays offline."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HUB_OFFLINE", "1")
            patch.setenv("TRANSFORMERS_OFFLINE", "1")
            yield
    finally:
        torch.set_num_threads(threads)


_REFERENCES: dict[Path, dict[str, Any]] = {}


def build_reference(demo_root: Path, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny shards of the smoke stages and an uninterrupted reference run (in a child, see
    ``run_child``; once per session): ``shards``, ``heldout``, ``reference`` (step →
    compared state), ``best`` (best.pt's model) and ``files`` (name → the reference
    checkpoint files)."""
    if demo_root not in _REFERENCES:
        _REFERENCES[demo_root] = _build_reference(demo_root, factory.mktemp("train-reference"))
    return _REFERENCES[demo_root]


def _build_reference(demo_root: Path, base: Path) -> dict[str, Any]:
    for name, split in (("refcoco", "train"), ("ref-youtube-vos", "train")):
        raw = demo_root / "raw" / raw_dir_name(name)
        ingest(name, split, raw, base / "shards", shard_size=2, progress=False)
    paths = {"shards": base / "shards", "heldout": demo_root / "heldout"}
    run_child(train_args(paths, base / "reference"))
    checkpoints = base / "reference" / "smoke" / "checkpoints"
    steps = list_step_checkpoints(checkpoints)
    assert [p.name for p in steps] == [f"step-{s:08d}.pt" for s in range(1, STEPS + 1)]
    reference = {s: state_of(p) for s, p in enumerate(steps, start=1)}
    first, last = reference[1]["model"], reference[STEPS]["model"]
    assert any(not torch.equal(v, last[k]) for k, v in first.items())  # training did something
    return {
        **paths,
        "reference": reference,
        "best": load_checkpoint(checkpoints / BEST)["model"],
        "files": {p.name: p for p in [*steps, checkpoints / BEST]},
    }


@pytest.fixture(scope="module")
def setup(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with quiet_cpu():
        yield build_reference(demo_root, tmp_path_factory)
    if SURVIVED:
        print(f"\ntraining kill points survived: {len(SURVIVED)}: {', '.join(SURVIVED)}")


def check_after_kill(run: Path, reference: dict[int, dict[str, Any]]) -> Path | None:
    """Every checkpoint under a final name is complete and equals the reference's; the dead
    run's lock file is still there (taken over by the resume). Returns the newest one."""
    steps = list_step_checkpoints(run / "checkpoints")
    for path in steps:
        check_resumable(path)
        step = int(path.name[5:13])
        assert_same(state_of(path), reference[step], path.name)
    if (run / "checkpoints" / BEST).exists():
        check_resumable(run / "checkpoints" / BEST)
    assert (run / LOCK_NAME).exists(), "the killed run's lock file should be left behind"
    return steps[-1] if steps else None


def resume_and_compare(setup: dict[str, Any], out: Path, expected: Path | None) -> str:
    """``refsam train --resume auto`` (in a child: see ``run_child``) → same final state as
    the reference, resumed from ``expected`` (the newest complete checkpoint), nothing left
    behind. Returns the child's log."""
    log = run_child(train_args(setup, out, "--resume", "auto"))
    resumed = [line for line in log.splitlines() if "refsam.train.runner: resuming" in line]
    if expected is None:
        assert resumed == [], log
    else:
        assert resumed and f"resuming from {expected} at step" in resumed[0], log
    run = out / "smoke"
    final = list_step_checkpoints(run / "checkpoints")[-1]
    assert final.name == f"step-{STEPS:08d}.pt"
    assert_same(state_of(final), setup["reference"][STEPS], "final")
    assert_same(load_checkpoint(run / "checkpoints" / BEST)["model"], setup["best"], BEST)
    assert temporaries(run) == []
    assert not (run / LOCK_NAME).exists()
    return log


@pytest.mark.slow
@pytest.mark.parametrize("point", list(TRIGGERS))
def test_kill_at_a_named_moment_then_resume(
    setup: dict[str, Any], tmp_path: Path, point: str
) -> None:
    out = tmp_path / "out"
    proc = start_child(train_args(setup, out))
    assert kill_when(proc, out / "smoke", TRIGGERS[point]), child_log(proc)
    newest = check_after_kill(out / "smoke", setup["reference"])
    resume_and_compare(setup, out, newest)
    SURVIVED.append(point)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_a_random_moment_then_resume(
    setup: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    out = tmp_path / "out"
    delay = random.Random(seed).uniform(0.5, 4.0)  # seconds after the lock was taken
    proc = start_child(train_args(setup, out))
    killed = kill_when(proc, out / "smoke", delay)
    if killed and (out / "smoke" / LOCK_NAME).exists():
        newest = check_after_kill(out / "smoke", setup["reference"])
        resume_and_compare(setup, out, newest)
        SURVIVED.append(f"random seed {seed} ({delay:.2f} s)")
    else:  # it ended (or had released its lock: its work was done) before the delay: not
        # counted, but its result is still checked
        assert proc.returncode in (0, -signal.SIGKILL), child_log(proc)
        final = out / "smoke" / "checkpoints" / f"step-{STEPS:08d}.pt"
        assert_same(state_of(final), setup["reference"][STEPS], "final")


@pytest.mark.slow
def test_killed_twice_in_a_row_then_resumed(setup: dict[str, Any], tmp_path: Path) -> None:
    """Killed inside the first checkpoint write, then the ``--resume auto`` run is killed in
    stage 2's first checkpoint write; a third run completes."""
    out = tmp_path / "out"
    run = out / "smoke"
    proc = start_child(train_args(setup, out))
    assert kill_when(proc, run, TRIGGERS["inside-first-checkpoint-write"]), child_log(proc)
    assert check_after_kill(run, setup["reference"]) is None
    proc = start_child(train_args(setup, out, "--resume", "auto"))
    assert kill_when(proc, run, TRIGGERS["inside-stage-2-checkpoint-write"]), child_log(proc)
    assert check_after_kill(run, setup["reference"]).name == "step-00000002.pt"
    resume_and_compare(setup, out, run / "checkpoints" / "step-00000002.pt")
    SURVIVED.extend(["chained kill 1", "chained kill 2"])


@pytest.mark.slow
def test_resume_auto_skips_torn_checkpoints_and_leftover_temporaries(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """A truncated and a garbage step checkpoint (newest) and temporaries of killed writers:
    each is named in a warning, the resume uses step 2 (the newest complete one), the torn
    files are moved aside and no temporary is left."""
    out = tmp_path / "out"
    ckpt = out / "smoke" / "checkpoints"
    ckpt.mkdir(parents=True)
    files = setup["files"]
    for name in ("step-00000001.pt", "step-00000002.pt"):
        (ckpt / name).write_bytes(files[name].read_bytes())
    full = files["step-00000003.pt"].read_bytes()
    (ckpt / "step-00000003.pt").write_bytes(full[: len(full) // 2])  # torn: truncated
    (ckpt / "step-00000004.pt").write_bytes(random.Random(0).randbytes(4096))  # garbage
    (ckpt / ".step-00000004.pt.tmp-999999").write_bytes(full[:1000])  # a killed writer's
    (ckpt / f".{BEST}.tmp-999998").write_bytes(b"")
    log = resume_and_compare(setup, out, ckpt / "step-00000002.pt")
    warnings = "\n".join(line for line in log.splitlines() if line.startswith("WARNING "))
    for name in (
        "step-00000003.pt",
        "step-00000004.pt",
        ".step-00000004.pt.tmp-999999",
        f".{BEST}.tmp-999998",
    ):
        assert str(ckpt / name) in warnings, f"no warning names {name}"
    assert sorted(p.name for p in ckpt.glob("*.corrupt")) == [
        "step-00000003.pt.corrupt",
        "step-00000004.pt.corrupt",
    ]
    SURVIVED.append("torn newest checkpoints + leftover temporaries")
