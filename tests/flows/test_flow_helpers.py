"""Fast checks of the flows' helpers: config splits, selection parsing, retry rule,
torchrun command line, MLflow UI links, the pipeline CLI's error path, the ingest task
runner (threads unless Dask is asked for) and Prefect's temporary server dying with us
and getting time to start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.common import (
    SERVER_START_ENV,
    SERVER_START_TIMEOUT_S,
    is_transient_io,
    load_flow_config,
    mlflow_model_url,
    mlflow_run_url,
    mlflow_ui_command,
    parse_selection,
    required_splits,
    with_run_name,
)
from flows.train import DEFAULT_TORCHRUN_ARGS, TORCHRUN_ARGS_ENV, torchrun_command
from refsam.cli import main
from refsam.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_required_splits_are_training_then_eval_sets_without_repeats() -> None:
    cfg = load_flow_config(REPO / "configs/demo-tiny-cpu.yaml")
    assert [s.tag for s in required_splits(cfg)] == [
        "refcoco/train",
        "refcoco+/train",
        "refcocog/train",
        "ref-youtube-vos/train",
        "mevis/train",
        "ref-davis17/valid",
        "ref-youtube-vos/valid",
        "mevis/valid_u",
        "mevis/valid",
    ]
    renamed = with_run_name(cfg, "demo-x")
    assert renamed.train.run_name == "demo-x" and cfg.train.run_name == "demo-tiny-cpu"


def test_parse_selection() -> None:
    assert parse_selection("ref-davis17/valid/J&F") == ("ref-davis17", "valid", "J&F")
    for bad in ("J&F", "ref-davis17/J&F", "ref-davis17//J&F"):
        with pytest.raises(ConfigError, match="expected <dataset>/<split>/<metric>"):
            parse_selection(bad)


def test_only_transient_io_errors_are_retried() -> None:
    assert is_transient_io(ConnectionResetError("peer reset"))
    assert is_transient_io(TimeoutError("slow disk"))
    assert is_transient_io(OSError(5, "I/O error"))
    assert not is_transient_io(FileNotFoundError("missing.pt"))
    assert not is_transient_io(PermissionError("read-only"))
    assert not is_transient_io(ValueError("bad value"))
    assert not is_transient_io(ConfigError("bad key"))


def test_torchrun_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TORCHRUN_ARGS_ENV, raising=False)
    cmd = torchrun_command(tmp_path / "c.yaml", tmp_path / "r.json", 4, "abc", "sqlite:////x.db")
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3 : 3 + len(DEFAULT_TORCHRUN_ARGS)] == list(DEFAULT_TORCHRUN_ARGS)
    assert "--nproc-per-node=4" in cmd and cmd[cmd.index("-m", 3) + 1] == "flows.train"
    assert cmd[-4:] == ["--run-id", "abc", "--tracking-uri", "sqlite:////x.db"]
    monkeypatch.setenv(
        TORCHRUN_ARGS_ENV, "--nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=node0:29400"
    )
    multi = torchrun_command(tmp_path / "c.yaml", tmp_path / "r.json", 8, None, None)
    assert multi[3:6] == ["--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400"]
    assert "--standalone" not in multi and "--run-id" not in multi


def test_mlflow_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFSAM_MLFLOW_UI", raising=False)
    local = "sqlite:////p/mlruns/mlflow.db"
    mode = "?workflowType=machine_learning"  # the UI's model-training mode, not GenAI
    assert (
        mlflow_run_url(local, "3", "r1") == f"http://127.0.0.1:5000/#/experiments/3/runs/r1{mode}"
    )
    assert (
        mlflow_run_url("http://mlflow:5000/", "3", "r1")
        == f"http://mlflow:5000/#/experiments/3/runs/r1{mode}"
    )
    assert mlflow_model_url(local, "refsam", "2").endswith(f"/#/models/refsam/versions/2{mode}")
    assert "--backend-store-uri sqlite:////p/mlruns/mlflow.db" in mlflow_ui_command(local)
    monkeypatch.setenv("REFSAM_MLFLOW_UI", "http://ui:8080")
    assert mlflow_run_url(local, "1", "r").startswith("http://ui:8080/#/")


def test_pipeline_cli_rejects_a_bad_config_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["pipeline", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    args = ["pipeline", "--config", str(REPO / "configs/smoke.yaml"), "--set", "train.nope=1"]
    assert main(args) == 2
    assert "unknown key 'train.nope'" in capsys.readouterr().err


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_ingest_runs_on_threads_unless_a_dask_address_is_given() -> None:
    """The task runner is optional: threads by default, prefect-dask imported only for an
    address (the retrain flow's ``dask_address``, ``run_ingest_flow(dask_address=…)``)."""
    out = _python(
        "import sys\n"
        "from flows.common import ingest_task_runner\n"
        "from flows.ingest import run_ingest_flow\n"
        "from flows.retrain import retrain_flow\n"
        "runner = ingest_task_runner(3)\n"
        "print(type(runner).__name__, runner._max_workers,"
        " any(m.split('.')[0] in ('prefect_dask', 'distributed') for m in sys.modules))\n"
        "from inspect import signature\n"
        "print(signature(run_ingest_flow).parameters['dask_address'].default,"
        " signature(retrain_flow.fn).parameters['dask_address'].default)"
    )
    assert out.splitlines() == ["ThreadPoolTaskRunner 3 False", "None None"]
    from flows.common import ingest_task_runner

    assert type(ingest_task_runner(1, "tcp://127.0.0.1:1")).__name__ == "DaskTaskRunner"


def _alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_PARENT = """
import subprocess, sys, time
from flows.common import _TiedSubprocess
child = _TiedSubprocess(subprocess).Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_temporary_prefect_server_dies_with_the_process() -> None:
    """Prefect starts its temporary API server as a plain child and stops it at exit; a
    SIGKILLed ``refsam pipeline`` left it running as an orphan. Now the kernel sends it
    SIGTERM when its parent dies (tests/reliability/test_kill_flows.py kills a real one)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # the bootstrap has set PR_SET_PDEATHSIG and exec'ed by now
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its killed parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert (
        _python(
            "from flows.common import tie_temporary_server_to_process as t; print(t())",
            PREFECT_API_URL="http://127.0.0.1:4200/api",
        )
        == "False"
    )  # a real server: nothing to tie


def test_temporary_server_gets_time_to_start_unless_the_user_says_otherwise() -> None:
    """Prefect's 20 s default was not enough for a server creating its database on a busy
    2-core machine (CI failed so); ``prepare_prefect()`` raises it even when Prefect was
    imported first, and leaves a user's own value alone."""
    read = (
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; "
        "print(s.value())"
    )
    prepare = "from flows.common import prepare_prefect; prepare_prefect()"
    assert _python(f"import prefect; {prepare}; {read}") == str(SERVER_START_TIMEOUT_S)
    assert SERVER_START_TIMEOUT_S >= 60
    assert _python(f"import prefect; {read}") == "20"  # Prefect's own default, for contrast
    assert _python(f"{prepare}; {read}", **{SERVER_START_ENV: "7"}) == "7"


_SIDE_EFFECTS = (
    "import os, sys; {code}; "
    "from flows.common import SERVER_START_ENV, _TieWhenImported; "
    "print(SERVER_START_ENV in os.environ, any(isinstance(f, _TieWhenImported) for f in sys.meta_path))"
)


def test_importing_flows_leaves_prefect_alone_until_an_entry_point_prepares_it() -> None:
    """Importing ``flows`` (and every flow module) sets no environment variable and hooks
    no import; ``prepare_prefect()`` does both (``refsam pipeline`` calls it)."""
    imports = "import flows, flows.ingest, flows.train, flows.evaluate, flows.retrain"
    assert _python(_SIDE_EFFECTS.format(code=imports)) == "False False"
    prepared = f"{imports}; from flows.common import prepare_prefect; prepare_prefect()"
    assert _python(_SIDE_EFFECTS.format(code=prepared)) == "True True"
