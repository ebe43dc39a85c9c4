"""Helpers shared by the train / evaluate / retrain flows (no logic of their own).

Config loading for flow parameters (a YAML path plus ``--set``-style overrides, so a
deployment's parameters stay plain JSON), the data splits a config needs, the selection
metric's parts, MLflow UI links, the retry rule "retry on transient I/O only" and the
task runner of the ingest step (threads here, a Dask cluster when an address is given),
and :func:`prepare_prefect`, which entry points call before running a flow in process:
:func:`tie_temporary_server_to_process` (Prefect's temporary API server dies with us) and
:func:`allow_slow_server_start` (and gets the time it needs to start).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from refsam.config import DataSplit, RefSAMConfig, load_config
from refsam.config import parse_selection as parse_selection  # re-exported for the flows

IO_RETRIES = 2
IO_RETRY_DELAY_S = 2
MLFLOW_UI_ENV = "REFSAM_MLFLOW_UI"
SERVER_START_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_START_TIMEOUT_S = 180
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
_NOT_TRANSIENT = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def load_flow_config(config: str | Path, overrides: list[str] | None = None) -> RefSAMConfig:
    """The resolved config of a flow run: ``config`` (YAML path) with dotted overrides."""
    return load_config(Path(config), list(overrides or []))


def with_run_name(cfg: RefSAMConfig, run_name: str) -> RefSAMConfig:
    """A copy of ``cfg`` whose run directory is ``train.output_dir/run_name``."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"run_name": run_name})})


def required_splits(cfg: RefSAMConfig) -> list[DataSplit]:
    """Every split the config trains or evaluates on, in first-use order, without repeats."""
    seen: dict[str, DataSplit] = {}
    for split in [d for stage in cfg.train.stages for d in stage.datasets] + list(cfg.eval.sets):
        seen.setdefault(split.tag, split)
    return list(seen.values())


def score_split(cfg: RefSAMConfig, split: DataSplit, checkpoint: str | Path, out: Path) -> Any:
    """Score ``checkpoint`` on ``split`` with the config's shards, held-out ground truth and
    device (an :class:`~refsam.eval.evaluator.EvalResult`)."""
    from refsam.eval.evaluator import evaluate

    return evaluate(
        Path(checkpoint),
        split.dataset,
        split.split,
        shards=cfg.data.shards_root,
        out=out,
        heldout=cfg.data.heldout_root,
        device=cfg.train.device,
    )


def mlflow_ui_base(tracking_uri: str) -> str:
    """Where the MLflow UI of ``tracking_uri`` is served: the server itself for an
    ``http(s)://`` store, else ``$REFSAM_MLFLOW_UI`` (default ``http://127.0.0.1:5000``,
    what ``mlflow ui`` serves)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get(MLFLOW_UI_ENV, DEFAULT_MLFLOW_UI).rstrip("/")


# MLflow 3's UI opens in its GenAI mode unless the page asks for model training
UI_MODE = "?workflowType=machine_learning"


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    base = mlflow_ui_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{UI_MODE}"


def mlflow_model_url(tracking_uri: str, name: str, version: str) -> str:
    return f"{mlflow_ui_base(tracking_uri)}/#/models/{name}/versions/{version}{UI_MODE}"


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that serves the UI of a local store (a server URL is already a UI)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def is_transient_io(exc: BaseException) -> bool:
    """True for I/O failures worth a retry (network, busy disk); False for missing or
    forbidden paths and for every non-I/O error."""
    return isinstance(exc, OSError) and not isinstance(exc, _NOT_TRANSIENT)


def retry_on_io(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on transient I/O."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by the state
        return is_transient_io(exc)
    return False


def ingest_task_runner(workers: int, dask_address: str | None = None) -> Any:
    """Task runner of the ingest flow: ``workers`` threads, or the Dask cluster at
    ``dask_address`` (``tcp://scheduler:8786``; prefect-dask) to spread shards over
    machines."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max(1, workers))


# ---------------------------------------------------------------- Prefect's temporary server
_SERVER_MODULE = "prefect.server.api.server"
# Run by the temporary server's Python before it becomes uvicorn: ask the kernel for SIGTERM
# when the parent (thread) that started it ends (Linux PR_SET_PDEATHSIG, kept across exec),
# exit if the parent is already gone, then exec the original command line.
_TIE_BOOTSTRAP = (
    "import os, sys\n"
    "try:\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM\n"
    "except Exception:  # no prctl: the server runs untied\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


class _TiedSubprocess:
    """``subprocess`` as Prefect's server module sees it: ``Popen`` of a Python command
    started from the main thread goes through :data:`_TIE_BOOTSTRAP`; the rest is the
    real module."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:  # noqa: N802
        if (
            isinstance(args, list)
            and args
            and args[0] == sys.executable
            and threading.current_thread() is threading.main_thread()
        ):
            args = [sys.executable, "-c", _TIE_BOOTSTRAP, str(os.getpid()), *args[1:]]
        return self._real.Popen(args, *rest, **kwargs)


class _TieWhenImported(importlib.abc.MetaPathFinder):
    """Ties Prefect's server module the moment it is imported (importing it just for this
    would cost every flow import ~2 s, torchrun ranks included)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _SERVER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_tie(module: Any) -> None:
                exec_module(module)
                _tie(module)

            spec.loader.exec_module = exec_and_tie  # type: ignore[method-assign]
        return spec


def _tie(server_module: Any) -> None:
    if not isinstance(server_module.subprocess, _TiedSubprocess):
        server_module.subprocess = _TiedSubprocess(subprocess)


def tie_temporary_server_to_process() -> bool:
    """Make the temporary Prefect API server that a flow run starts when no
    ``PREFECT_API_URL`` is set (``refsam pipeline``, tests) die with this process.

    Prefect starts that server as a plain child process and stops it at exit (atexit). A
    process killed by SIGKILL (``kill -9``, the OOM killer, a lost CI runner) runs no
    atexit handler, so without the tie the server would live on as an orphan, one more per
    killed run (tests/reliability/test_kill_flows.py); with it, the Linux kernel sends the
    server SIGTERM when we die. Returns True when the tie is in place, or will be once Prefect imports its
    server module (Linux, no API URL set); idempotent.
    """
    if not sys.platform.startswith("linux"):
        return False
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # a real server: nothing is started here
        return False
    module = sys.modules.get(_SERVER_MODULE)
    if module is not None:
        _tie(module)
    elif not any(isinstance(f, _TieWhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _TieWhenImported())
    return True


def allow_slow_server_start(seconds: int = SERVER_START_TIMEOUT_S) -> int:
    """Give Prefect's temporary API server ``seconds`` to start unless the user set
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``; returns the timeout in force.

    Prefect waits 20 s by default. A server on a new ``PREFECT_HOME`` (a fresh clone's
    ``make demo``, every test with its own home) creates its database first: ~21 s on an
    idle 2-core machine (~10 s with the database in place), so with the default a busy
    machine fails with "Timed out while attempting to connect to ephemeral Prefect API
    server".
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    if SERVER_START_ENV not in os.environ:
        os.environ[SERVER_START_ENV] = str(seconds)
        refresh_global_settings_context()  # Prefect read its settings at import
    return get_current_settings().server.ephemeral.startup_timeout_seconds


def prepare_prefect() -> None:
    """Get Prefect ready to run a flow in this process: its temporary API server (used
    when no ``PREFECT_API_URL`` is set) dies with the process and gets time to start.
    Call it once at an entry point (``refsam pipeline``, tests) before the first flow
    runs; importing :mod:`flows` does nothing to Prefect. Idempotent."""
    allow_slow_server_start()
    tie_temporary_server_to_process()
