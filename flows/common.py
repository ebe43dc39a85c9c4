"""Helpers shared by the train / evaluate / retrain flows (no logic of their own).

Config loading for flow parameters (a YAML path plus ``--set``-style overrides, so a
deployment's parameters stay plain JSON), the data splits a config needs, the selection
metric's parts, MLflow UI links, the retry rule "retry on transient I/O only" and the
task runner of the ingest step (threads here, a Dask cluster when an address is given).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from refsam.config import DataSplit, RefSAMConfig, load_config
from refsam.errors import ConfigError

IO_RETRIES = 2
IO_RETRY_DELAY_S = 2
MLFLOW_UI_ENV = "REFSAM_MLFLOW_UI"
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


def parse_selection(selection: str) -> tuple[str, str, str]:
    """``"ref-davis17/valid/J&F"`` → ``("ref-davis17", "valid", "J&F")``."""
    parts = selection.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"eval.selection {selection!r}: expected <dataset>/<split>/<metric>, e.g. ref-davis17/valid/J&F"
        )
    return parts[0], parts[1], parts[2]


def mlflow_ui_base(tracking_uri: str) -> str:
    """Where the MLflow UI of ``tracking_uri`` is served: the server itself for an
    ``http(s)://`` store, else ``$REFSAM_MLFLOW_UI`` (default ``http://127.0.0.1:5000``,
    what ``mlflow ui`` serves)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get(MLFLOW_UI_ENV, DEFAULT_MLFLOW_UI).rstrip("/")


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_model_url(tracking_uri: str, name: str, version: str) -> str:
    return f"{mlflow_ui_base(tracking_uri)}/#/models/{name}/versions/{version}"


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
