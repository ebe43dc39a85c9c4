"""``make demo-cluster``: the nightly deployment once against a local stand-in of a team's
services, every one a real server process on loopback (refsam.services):

* an S3-compatible object store (``moto_server``) with bucket ``refsam-demo``: the demo's
  raw data and held-out ground truth are uploaded to it, the shards are written to it;
* ``mlflow server`` (sqlite backend, artifacts proxied to ``s3://refsam-demo/mlflow``);
* ``prefect server`` with the ``refsam-local`` process work pool, ``prefect deploy`` of
  prefect.yaml's deployments, and one process worker (``--run-once``);
* a Dask cluster (``dask scheduler`` + one ``dask worker`` with 2 worker processes) for the
  ingest tasks.

The nightly deployment's flow run gets the data roots, the tracking URI and the Dask
address as parameters, exactly as a team would set them on the deployment. Everything
started is stopped at the end (``--keep``: after Enter is pressed, to browse the UIs).
Logs and state go to ``.cluster/`` (``--workdir``).

    python -m flows.cluster [--config configs/demo-tiny-cpu.yaml] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from refsam.errors import UserError
from refsam.paths import DEMO_HELDOUT, DEMO_RAW, project_root
from refsam.services import (
    BIN,
    create_bucket,
    environment,
    free_port,
    s3_client_env,
    s3_server,
    service,
    stop,
)

BUCKET = "refsam-demo"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 3600


def _cli(args: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=project_root(), env=env, capture_output=True,
        text=True, timeout=timeout, start_new_session=True,
    )  # fmt: skip
    with log.open("a") as handle:
        handle.write(f"$ prefect {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _upload(local: Path, url: str) -> int:
    """Copy a local folder to ``url`` (one PUT per file); returns the file count."""
    from refsam.storage import as_path

    target = as_path(url)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        (target / path.relative_to(local).as_posix()).write_bytes(path.read_bytes())
    return len(files)


def _run_nightly(api: str, parameters: dict[str, Any], log: Path) -> dict[str, Any]:
    """Create a flow run of retrain/nightly with ``parameters``; returns its id and name."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/nightly")
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    with log.open("a") as handle:
        handle.write(f"created flow run {run.name} ({run.id}) of retrain/nightly\n")
    return {"id": run.id, "name": run.name}


def _state(api: str, run_id: Any) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state else None


def run_cluster(
    config: str,
    workdir: Path,
    *,
    raw: Path = DEMO_RAW,
    heldout: Path = DEMO_HELDOUT,
    keep: bool = False,
) -> int:
    """Start the services, upload ``raw`` and ``heldout`` (the demo data), run the nightly
    deployment once, report, stop everything; 0 when the flow run completed."""
    root = project_root()
    raw, heldout = root / raw, root / heldout
    for folder in (raw, heldout):
        if not folder.is_dir():
            raise UserError(f"{folder}: not found; run `make demo-data` first")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    steps = logs / "steps.log"
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server(logs / "s3.log"))
        env = {**os.environ, **s3_client_env(s3.url), "REFSAM_HOME": str(root)}
        env = {k: v for k, v in env.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
        stack.enter_context(environment(s3_client_env(s3.url)))
        bucket = create_bucket(s3.url, BUCKET)
        print(f"==> S3-compatible server {s3.url}, bucket {bucket}")
        counts = {
            "raw": _upload(raw, f"{bucket}/raw"),
            "heldout": _upload(heldout, f"{bucket}/heldout"),
        }
        print(f"    uploaded {counts['raw']} raw and {counts['heldout']} held-out files")

        mlflow_port = free_port()
        tracking = f"http://127.0.0.1:{mlflow_port}"
        stack.enter_context(service(
            "mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                       str(mlflow_port), "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
                       "--artifacts-destination", f"{bucket}/mlflow", "--workers", "1"],
            f"{tracking}/health", logs / "mlflow.log", env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        ))  # fmt: skip
        print(f"==> MLflow server {tracking} (artifacts in {bucket}/mlflow)")

        prefect_port = free_port()
        api = f"http://127.0.0.1:{prefect_port}/api"
        prefect_env = {
            **env, "PREFECT_HOME": str(workdir / "prefect"), "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false",
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
        }  # fmt: skip
        stack.enter_context(service(
            "prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                        "--port", str(prefect_port)],
            f"{api}/health", logs / "prefect-server.log", env=prefect_env, cwd=workdir,
        ))  # fmt: skip
        print(f"==> Prefect server {api.removesuffix('/api')} (UI)")
        _cli(["work-pool", "create", "refsam-local", "--type", "process", "--overwrite"],
             prefect_env, steps)  # fmt: skip
        _cli(["--no-prompt", "deploy", "--all"], prefect_env, steps)

        dask_port = free_port()
        scheduler = f"tcp://127.0.0.1:{dask_port}"
        dashboard = free_port()
        stack.enter_context(service(
            "dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(dask_port), "--dashboard-address", f"127.0.0.1:{dashboard}"],
            f"http://127.0.0.1:{dashboard}/health", logs / "dask-scheduler.log", env=env, cwd=root,
        ))  # fmt: skip
        worker = stack.enter_context(_dask_workers(scheduler, env, root, logs))
        print(f"==> Dask scheduler {scheduler} with {worker} worker processes")

        overrides = [
            f"data.raw_root={bucket}/raw", f"data.shards_root={bucket}/shards",
            f"data.heldout_root={bucket}/heldout", f"tracking.uri={tracking}",
            f"train.output_dir={workdir / 'outputs'}",
        ]  # fmt: skip
        run = _run_nightly(api, {"config": config, "overrides": overrides,
                                 "dask_address": scheduler}, steps)  # fmt: skip
        print(f"==> nightly flow run {run['name']} created; a process worker picks it up")
        started = time.monotonic()
        worker_log = logs / "prefect-worker.log"
        with worker_log.open("w") as handle:
            process = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "refsam-local", "--run-once",
                 "--limit", "1"], cwd=root, env=prefect_env, stdout=handle,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        state = None
        while time.monotonic() - started < RUN_TIMEOUT_S:
            state = _state(api, run["id"])
            if state in TERMINAL:
                break
            time.sleep(3)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        minutes = (time.monotonic() - started) / 60
        print(f"==> nightly flow run {run['name']}: {state} in {minutes:.1f} min")
        _report(tracking, bucket, api, workdir)
        if keep:
            input("services still running; press Enter to stop them ")
        print("==> stopping every service started")
    return 0 if state == "COMPLETED" else 1


@contextlib.contextmanager
def _dask_workers(scheduler: str, env: dict[str, str], cwd: Path, logs: Path):
    """``dask worker`` with 2 single-threaded worker processes; yields their count once
    both joined the scheduler."""
    from distributed import Client

    with (logs / "dask-worker.log").open("w") as handle:
        process = subprocess.Popen(
            [str(BIN / "dask"), "worker", scheduler, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard"], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield 2
    finally:
        stop(process)


def _report(tracking: str, bucket: str, api: str, workdir: Path) -> None:
    """Where to look: the MLflow runs and champion, the bucket's prefixes, the logs."""
    from refsam.storage import as_path

    for prefix in ("shards", "mlflow"):
        found = as_path(f"{bucket}/{prefix}").fs.find(f"{BUCKET}/{prefix}")
        print(f"    {bucket}/{prefix}: {len(found)} objects")
    print(f"    MLflow UI: {tracking}   (runs, eval runs, registry: model 'refsam' @champion)")
    print(f"    Prefect UI: {api.removesuffix('/api')}   logs: {workdir / 'logs'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo-tiny-cpu.yaml")
    parser.add_argument("--workdir", type=Path, default=Path(".cluster"))
    parser.add_argument("--raw", type=Path, default=DEMO_RAW, help="local raw data to upload")
    parser.add_argument("--heldout", type=Path, default=DEMO_HELDOUT, help="held-out GT to upload")
    parser.add_argument("--keep", action="store_true", help="keep the services up until Enter")
    args = parser.parse_args(argv)
    return run_cluster(
        args.config, args.workdir, raw=args.raw, heldout=args.heldout, keep=args.keep
    )


if __name__ == "__main__":
    sys.exit(main())
