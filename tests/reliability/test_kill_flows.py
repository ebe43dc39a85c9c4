"""SIGKILL the MLflow tracking and the Prefect flows, then resume or re-run: the MLflow
sqlite store stays readable and consistent, a resumed training continues its MLflow run
(same run id, each step logged once, FINISHED), a re-run retrain flow completes with a
valid ``champion``, its ingest part is cached, and nothing a killed run started (Prefect's
temporary API server) outlives it.

The kill points are reached with hooks that a small wrapper (``python -c _CHILD``) puts
around the real ``refsam`` CLI; the code under test is unchanged. At the chosen point the
process writes a marker file and waits, and the test SIGKILLs it (the process only, not
its group). Points:

- ``metrics-commit:N``: inside the sqlite transaction of the first ``train/*`` metrics
  batch at step >= N: its INSERTs ran, its COMMIT did not;
- ``register_checkpoint``: training and evaluation done, nothing registered yet.

Random kills hit a loop of 1000-metric batches (one ``log_batch`` each) at seeded delays.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from refsam.config import TrackingConfig
from refsam.data.shards import ingest
from refsam.data.sources import raw_dir_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/smoke.yaml"
EXPERIMENT = "refsam-smoke"  # tracking.experiment of smoke.yaml
DAVIS_ONLY = "eval.sets=[{dataset: ref-davis17, split: valid}]"
SPLITS = [("refcoco", "train"), ("ref-youtube-vos", "train"), ("ref-davis17", "valid")]
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # header of a committed-to (hot) journal

_CHILD = r"""
import os, sys, threading, time
from pathlib import Path

point, marker = os.environ.get("KILLTEST_POINT", ""), Path(os.environ["KILLTEST_MARKER"])


def hold(*_args):
    marker.write_text(point)
    time.sleep(600)


if point.startswith("metrics-commit:"):
    at = int(point.split(":")[1])
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from refsam.tracking.runs import MlflowRunLogger

    armed = threading.local()
    real_log = MlflowRunLogger.log_metrics

    def log_metrics(self, metrics, step):
        armed.on = "train/loss" in metrics and int(step) >= at
        try:
            return real_log(self, metrics, step)
        finally:
            armed.on = False

    MlflowRunLogger.log_metrics = log_metrics
    event.listen(Engine, "commit", lambda conn: hold() if getattr(armed, "on", False) else None)
elif point == "register_checkpoint":
    import refsam.tracking as tracking

    real = getattr(tracking, point)

    def paused(*args, **kwargs):
        hold()
        return real(*args, **kwargs)

    setattr(tracking, point, paused)
from refsam.cli import main

sys.exit(main(sys.argv[1:]))
"""

_LOG_LOOP = r"""
import sys
from pathlib import Path

from refsam.tracking import MlflowRunLogger

uri, run_id, step, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
logger = MlflowRunLogger(run_id, tracking_uri=uri)
keys = [f"m/{i:04d}" for i in range(1000)]
marker.write_text("ready")
while True:
    logger.log_metrics({k: float(step) for k in keys}, step)
    step += 1
"""

FIGURES: list[str] = []


# ----------------------------------------------------------------------------- helpers
def _env(work: Path, point: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(work / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # on 2 shared cores, 2 torch threads spin and run far slower
        KILLTEST_MARKER=str(work / "marker"),
        KILLTEST_POINT=point or "",
    )
    return env


@dataclass
class Child:
    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start(work: Path, argv: list[str], point: str | None, name: str) -> Child:
    (work / "marker").unlink(missing_ok=True)
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *argv],
            cwd=REPO,
            env=_env(work, point),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(proc, log)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_at_marker(child: Child, work: Path, timeout: float = 300.0) -> list[int]:
    """Wait for the hook's marker, SIGKILL the process (not its group); returns the pids of
    its descendants at that moment."""
    marker = work / "marker"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if child.proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            pytest.fail(
                f"no kill point reached (rc {child.proc.poll()}):\n{child.output()[-3000:]}"
            )
        time.sleep(0.01)
    descendants = _descendants(child.proc.pid)
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait()
    return descendants


def _no_orphans(child: Child, descendants: list[int], timeout: float = 15.0) -> None:
    """Every process the killed one had started ends by itself (then the group is reaped)."""
    try:
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in descendants if _alive(p)]
        assert not left, "orphans of the killed run: " + "; ".join(
            Path(f"/proc/{p}/cmdline").read_text(errors="replace").replace("\0", " ")[:120]
            for p in left
            if Path(f"/proc/{p}/cmdline").exists()
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)


def _db_state(db: Path) -> str:
    """``hot journal`` (a commit was under way), ``journal`` (an open write transaction
    not yet committing) or ``clean``."""
    journal = db.with_name(db.name + "-journal")
    if not journal.exists():
        return "clean"
    with journal.open("rb") as f:
        return "hot journal" if f.read(8) == JOURNAL_MAGIC else "journal"


def _integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _train_runs(uri: str) -> list:
    client = _client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`refsam.kind` = 'train'",
        order_by=["attributes.start_time ASC"],
    )


def _steps(uri: str, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(m.step for m in _client(uri).get_metric_history(run_id, key))


def _ingest(demo_root: Path, shards: Path) -> None:
    for dataset, split in SPLITS:
        raw = demo_root / "raw" / raw_dir_name(dataset)
        ingest(dataset, split, raw, shards, shard_size=8, progress=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- random kills
def test_random_kills_inside_metric_batches_leave_the_store_consistent(tmp_path: Path) -> None:
    """Each 1000-metric batch is one ``log_batch`` call and one sqlite transaction: after a
    kill at any moment the store opens, passes ``integrity_check``, the run is still
    RUNNING and every batch is there in full or not at all; the run can then be ended."""
    from refsam.tracking import MlflowRunLogger
    from refsam.tracking.store import ensure_experiment

    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = _client(uri)
    run_id = client.create_run(ensure_experiment(client, "kill-batches")).info.run_id
    marker, states, batches, start = tmp_path / "ready", [], 0, time.monotonic()
    for seed in range(4):
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOG_LOOP, uri, run_id, str(10_000 * seed), str(marker)],
            cwd=REPO,
            start_new_session=True,
        )
        try:
            while not marker.exists():
                assert proc.poll() is None, "the logging loop died"
                time.sleep(0.01)
            time.sleep(random.Random(seed).uniform(0.2, 1.2))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        states.append(_db_state(db))
        assert _integrity(db) == "ok"
        run = _client(uri).get_run(run_id)
        assert run.info.status == "RUNNING"
        first, middle, last = (_steps(uri, run_id, k) for k in ("m/0000", "m/0500", "m/0999"))
        assert first == middle == last, "a metric batch was committed in part"
        assert len(first) > batches, "the loop logged nothing before the kill"
        batches = len(first)
    MlflowRunLogger(run_id, tracking_uri=uri).end("FINISHED")
    assert _client(uri).get_run(run_id).info.status == "FINISHED"
    FIGURES.append(
        f"4 random kills of a 1000-metric batch loop ({batches} batches committed in all; "
        f"store after each kill: {', '.join(states)}): no partial batch, integrity ok "
        f"({time.monotonic() - start:.0f} s)"
    )


# ----------------------------------------------------------------------------- training
@dataclass
class KilledTraining:
    uri: str
    db: Path
    run_dir: Path
    db_at_kill: str
    runs_after_kill: list
    steps_after_kill: list[int]
    checkpoints_after_kill: list[str]
    integrity_after_kill: str
    resumed_rc: int
    overrides: list[str]
    seconds: float


@pytest.fixture(scope="module")
def killed_training(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> KilledTraining:
    """``refsam train`` on smoke.yaml (2 + 2 steps, metrics every step, a checkpoint at step
    2), killed inside the sqlite COMMIT of step 4's metrics (steps 1–3 are logged, the
    newest checkpoint is step 2), then ``refsam train --resume auto``."""
    from refsam.cli import main

    work = tmp_path_factory.mktemp("kill-train")
    start = time.monotonic()
    _ingest(demo_root, work / "shards")
    db = work / "mlruns" / "mlflow.db"
    overrides = [
        f"data.raw_root={demo_root / 'raw'}",
        f"data.shards_root={work / 'shards'}",
        f"data.heldout_root={demo_root / 'heldout'}",
        f"train.output_dir={work / 'outputs'}",
        f"tracking.uri=sqlite:///{db}",
        "train.run_name=killed",
        "train.log_every=1",
        DAVIS_ONLY,
    ]
    argv = ["train", "--config", CONFIG, *(a for o in overrides for a in ("--set", o))]
    child = _start(work, argv, "metrics-commit:4", "train")
    _no_orphans(child, _kill_at_marker(child, work))
    at_kill = _db_state(db)
    uri = f"sqlite:///{db}"
    integrity = _integrity(db)
    runs = _train_runs(uri)
    steps = _steps(uri, runs[0].info.run_id) if runs else []
    run_dir = work / "outputs" / "killed"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _env(work).items():
            if key.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_")):
                patch.setenv(key, value)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rc = main([*argv, "--resume", "auto"])
        finally:
            torch.set_num_threads(threads)
    return KilledTraining(
        uri,
        db,
        run_dir,
        at_kill,
        runs,
        steps,
        checkpoints,
        integrity,
        rc,
        overrides,
        time.monotonic() - start,
    )


def test_training_killed_inside_an_mlflow_write_resumes_the_same_run(
    killed_training: KilledTraining,
) -> None:
    k = killed_training
    assert k.db_at_kill in ("journal", "hot journal")  # killed with a write transaction open
    assert k.integrity_after_kill == "ok"
    assert len(k.runs_after_kill) == 1 and k.runs_after_kill[0].info.status == "RUNNING"
    assert k.steps_after_kill == [1, 2, 3]  # step 4's batch was rolled back, not torn
    assert k.checkpoints_after_kill == ["step-00000002.pt"]
    assert k.resumed_rc == 0
    runs = _train_runs(k.uri)
    run_id = k.runs_after_kill[0].info.run_id
    assert [r.info.run_id for r in runs] == [run_id]  # the same MLflow run, no second one
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["refsam.resumes"] == "1"
    # steps 3 and 4 were trained again after the resume from step 2; step 3 is not doubled
    assert _steps(k.uri, run_id) == [1, 2, 3, 4]
    assert _steps(k.uri, run_id, "eval/ref-davis17/valid/J_and_F") == [4]
    FIGURES.append(
        f"training killed inside the COMMIT of step 4's metrics ({k.db_at_kill} at the kill), "
        f"resumed from step 2 into the same run: FINISHED, steps 1-4 once each "
        f"({k.seconds:.0f} s)"
    )


def test_runs_compare_shows_the_real_trainable_count(
    killed_training: KilledTraining, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trainer logs ``trainable/<group>``; ``refsam runs compare`` shows their sum, which
    equals the model's parameters with requires_grad."""
    from refsam.cli import main
    from refsam.config import load_config
    from refsam.modeling import build_refsam_from_config
    from refsam.tracking import compare_runs

    cfg = load_config(REPO / CONFIG, killed_training.overrides)
    model = build_refsam_from_config(cfg.model)
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = _train_runs(killed_training.uri)[0].data.params
    groups = {k: int(v) for k, v in params.items() if k.startswith("trainable/")}
    assert sum(groups.values()) == real and "tracking" in {k.split("/")[1] for k in groups}
    rows = compare_runs(EXPERIMENT, 5, tracking=TrackingConfig(uri=killed_training.uri))
    assert [r["trainable_params"] for r in rows] == [real]
    capsys.readouterr()
    assert main(["runs", "compare", "--tracking-uri", killed_training.uri]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("trainable"))
    assert line.split()[-1] == f"{real:,}"


# ----------------------------------------------------------------------------- retrain flow
@dataclass
class Pipeline:
    work: Path
    demo_root: Path
    uri: str = ""
    seconds: list[float] = field(default_factory=list)

    def argv(self) -> list[str]:
        overrides = [
            f"data.raw_root={self.demo_root / 'raw'}",
            f"data.shards_root={self.work / 'shards'}",
            f"data.heldout_root={self.demo_root / 'heldout'}",
            f"train.output_dir={self.work / 'outputs'}",
            f"tracking.uri={self.uri}",
            "train.log_every=1",
            "eval.overlays=0",
            DAVIS_ONLY,
        ]
        return ["pipeline", "--config", CONFIG, *(a for o in overrides for a in ("--set", o))]

    def killed(self, point: str, name: str) -> Child:
        child = _start(self.work, self.argv(), point, name)
        _no_orphans(child, _kill_at_marker(child, self.work))
        self.seconds.append(time.monotonic() - child.started)
        assert _integrity(self.work / "mlruns" / "mlflow.db") == "ok"
        return child

    def completed(self, name: str) -> Child:
        child = _start(self.work, self.argv(), None, name)
        try:
            assert child.proc.wait(timeout=300) == 0, child.output()[-3000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
        self.seconds.append(time.monotonic() - child.started)
        return child


def _shard_files(shards: Path) -> dict[str, tuple[int, int]]:
    """Every shard tar → (inode, mtime): unchanged when a re-run did not rewrite it."""
    return {
        str(p.relative_to(shards)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(shards.rglob("shard-*.tar"))
    }


def _ingest_cached(output: str) -> list[tuple[int, int]]:
    """(shards, cached) of every ingest subflow in a pipeline's log."""
    return [(int(a), int(b)) for a, b in re.findall(r"in (\d+) shards \((\d+) cached\)", output)]


def test_killed_retrain_flow_reruns_to_a_valid_champion(demo_root: Path, tmp_path: Path) -> None:
    """``refsam pipeline`` (Prefect home and MLflow store in tmp) killed 1) during training,
    inside the COMMIT of an MLflow metrics batch, 2) after training and evaluation, before
    registration; then a re-run completes and ``champion`` points to its valid version.
    After each kill the store is intact and no process of the killed run is left (Prefect's
    temporary server included); both re-runs find the ingest cached."""
    from refsam.modeling.checkpoint import load_checkpoint
    from refsam.tracking import resolve_model_uri

    p = Pipeline(tmp_path, demo_root, f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    client = _client(p.uri)

    p.killed("metrics-commit:3", "killed-in-training")
    runs = _train_runs(p.uri)
    assert [r.info.status for r in runs] == ["RUNNING"]
    assert _steps(p.uri, runs[0].info.run_id) == [1, 2]  # step 3's batch rolled back
    assert client.search_registered_models() == []
    shards = _shard_files(tmp_path / "shards")
    assert len(shards) == len(SPLITS)

    second = p.killed("register_checkpoint", "killed-before-registration")
    assert _ingest_cached(second.output()) == [(1, 1)] * len(SPLITS)
    assert _shard_files(tmp_path / "shards") == shards  # no shard rewritten
    assert [r.info.status for r in _train_runs(p.uri)] == ["RUNNING", "FINISHED"]
    assert client.search_registered_models() == []

    third = p.completed("rerun")
    assert _ingest_cached(third.output()) == [(1, 1)] * len(SPLITS)
    assert _shard_files(tmp_path / "shards") == shards
    assert "champion: PROMOTED" in third.output()
    runs = _train_runs(p.uri)
    assert [r.info.status for r in runs] == ["RUNNING", "FINISHED", "FINISHED"]
    aliases = client.get_registered_model("refsam").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1"}
    champion = client.get_model_version("refsam", "1")
    assert champion.run_id == runs[2].info.run_id
    assert champion.tags["decision.promoted"] == "true"
    checkpoint = resolve_model_uri("models:/refsam@champion", tracking=TrackingConfig(uri=p.uri))
    assert _sha256(checkpoint) == champion.tags["checkpoint.sha256"]
    assert load_checkpoint(checkpoint)["progress"]["step"] == 4
    assert not list((tmp_path / "shards").rglob(".*.tmp-*"))
    FIGURES.append(
        "retrain flow killed in training (inside an MLflow COMMIT) and before registration, "
        "then re-run: completed, champion v1 valid (sha256 checked), ingest cached on both "
        "re-runs, no orphan process; pipeline wall times "
        + ", ".join(f"{s:.0f}" for s in p.seconds)
        + " s"
    )


def test_report_figures() -> None:
    """Prints the figures for docs/reliability.md (runs last in this module; use -s)."""
    print("\n" + "\n".join(f"- {line}" for line in FIGURES))
