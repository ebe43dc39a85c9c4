"""Server processes for the tests (``mlflow ui``/``mlflow server``, ``prefect server``),
on refsam.services' process handling: a free loopback port, a health poll with a
deadline, and a stop that kills the whole process group (every server runs in its own
session so that the stop reaches its workers).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from refsam.services import free_port, service, stop

__all__ = ["free_port", "mlflow_env", "mlflow_process", "run_in_session", "stop"]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
MLFLOW_START_S = 180  # `mlflow ui` takes ~30 s to answer on a busy 2-core machine


def mlflow_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``MLFLOW_*`` (a server must not inherit a
    client's tracking URI), telemetry off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra or {})
    return env


@contextmanager
def mlflow_process(
    command: str,
    options: list[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[str]:
    """``mlflow <command> <options>`` (``ui`` or ``server``) on a free loopback port with
    one worker; yields its base URL once ``/health`` answers, stops it on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [MLFLOW, command, *options, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    environment = dict(env) if env is not None else mlflow_env()
    with service(
        f"mlflow {command}", args, f"{base}/health", log, env=environment, cwd=cwd,
        start_timeout_s=MLFLOW_START_S,
    ):  # fmt: skip
        yield base


def run_in_session(
    args: list[str], log: Path, *, env: Mapping[str, str], cwd: Path, timeout_s: float
) -> int:
    """Run ``args`` in its own session with output to ``log``; returns the exit code. Past
    ``timeout_s`` the whole process group (a CLI's own helper servers too) is stopped and
    the test fails with the log's tail."""
    with log.open("w") as out:
        process = subprocess.Popen(
            args, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{args[:4]} ran past {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
            ) from None
        finally:
            stop(process)
