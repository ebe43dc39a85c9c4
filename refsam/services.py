"""Local stand-ins for a team's services, as real server processes on loopback.

``make demo-cluster``, the object-store benchmark (``bench/loader.py --url``) and the tests
start the same programs a team runs — an S3-compatible object store (moto's server, the S3
HTTP API; MinIO or a real bucket in production), ``mlflow server``, ``prefect server`` and
its workers, a Dask cluster — each in its own session (a process group), health-polled
with a deadline, and stopped group-wide (SIGTERM, then SIGKILL) however the caller exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from refsam.errors import UserError

BIN = Path(sys.executable).parent
"""Where this environment's console scripts are (``mlflow``, ``prefect``, ``moto_server``)."""

S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "refsam-local",
    "AWS_SECRET_ACCESS_KEY": "refsam-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Static credentials of the local S3 server (it accepts any; clients need some)."""


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
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_s)
            return


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; UserError with the log's tail if ``process``
    exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise UserError(f"{' '.join(map(str, process.args[:2]))} exited:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise UserError(f"{url} did not answer in {timeout_s:.0f} s:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {log})"


@dataclass(frozen=True)
class Service:
    """A started server: its process, the URL it answers at, its log file."""

    name: str
    process: subprocess.Popen
    url: str
    log: Path


@contextlib.contextmanager
def service(
    name: str,
    command: Sequence[str],
    health_url: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    start_timeout_s: float = 180.0,
    url: str | None = None,
) -> Iterator[Service]:
    """Run ``command`` (own session, output to ``log``) until ``health_url`` answers; stop
    it when the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env if env is not None else os.environ),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(process, health_url, log, start_timeout_s)
        yield Service(name, process, url or health_url, log)
    finally:
        stop(process)


@contextlib.contextmanager
def s3_server(log: Path, *, port: int | None = None) -> Iterator[Service]:
    """A local S3-compatible server (``moto_server``, installed with ``make setup``);
    its URL is the endpoint: set ``AWS_ENDPOINT_URL`` to it (see :func:`s3_client_env`)."""
    program = BIN / "moto_server"
    if not program.exists():
        raise UserError(f"{program}: not installed; run `make setup` (moto[server] is a dev extra)")
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [str(program), "-H", "127.0.0.1", "-p", str(port)]
    with service("s3", command, f"{endpoint}/moto-api/", log) as started:
        yield Service("s3", started.process, endpoint, log)


def s3_client_env(endpoint: str) -> dict[str, str]:
    """The variables an S3 client (s3fs, boto3, ``mlflow server``) needs for ``endpoint``."""
    return {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in this process (and its children) for the block, then restore
    the previous values. fsspec's cached S3 clients are dropped on both ends, so none
    outlives the endpoint it was made for."""
    import fsspec

    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fsspec.get_filesystem_class("s3").clear_instance_cache()


def s3_client(endpoint: str):  # noqa: ANN201 (a boto3 S3 client)
    """A boto3 S3 client of the local server at ``endpoint`` (static credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def create_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` on ``endpoint`` (no error when it exists); returns ``s3://name``."""
    client = s3_client(endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    return f"s3://{name}"
