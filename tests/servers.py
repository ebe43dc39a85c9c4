"""Server processes for the tests (``mlflow ui``/``mlflow server``, ``prefect server``):
a free loopback port, a health poll with a deadline, and a stop that kills the whole
process group. Every server runs in its own session so that the stop reaches its workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
MLFLOW_START_S = 180  # `mlflow ui` takes ~30 s to answer on a busy 2-core machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace_s``; always reaps."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``process`` exits
    or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"{process.args[:2]} exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (
            f"{url} did not answer in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
        )
        time.sleep(1)


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
    with log.open("w") as out:
        process = subprocess.Popen(
            args,
            env=dict(env) if env is not None else mlflow_env(),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_healthy(process, f"{base}/health", log, MLFLOW_START_S)
            yield base
        finally:
            stop(process)


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
