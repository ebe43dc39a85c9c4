"""prefect.yaml as a service: a real ``prefect server start`` on loopback, the work pool,
``prefect deploy --all``, the nightly schedule, and the retrain deployment run through a
process worker (``--run-once``) with configs/smoke.yaml, ending with an MLflow run.

Every process this test starts runs in its own session and is killed (group-wide) in a
``finally`` with bounded waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from refsam.config import TrackingConfig
from refsam.services import free_port, stop, wait_healthy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
EXPECTED = {"ingest": "ingest", "train": "train", "evaluate": "evaluate", "nightly": "retrain"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api(method: str, url: str, **kwargs) -> httpx.Response:
    """One API call, retried like Prefect's own client does on 429/502/503: the loopback
    server answers 503 when its sqlite database is busy (the scheduler writing the nightly
    runs right after ``deploy``, CI under load). Bounded: 8 tries over about a minute."""
    for attempt in range(8):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code not in (429, 502, 503):
            return response
        time.sleep(min(2.0**attempt, 15.0))
    return response


def _cli(args: list[str], env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        [PREFECT, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], list[subprocess.Popen]]]:
    """A loopback Prefect server with its own PREFECT_HOME; yields (api url, env, processes
    to stop at the end)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "REFSAM_HOME": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # sqlite busy waits: Prefect's 10 s default is short on a loaded 2-core CI box
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
            "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "server.log").open("w")
    started = [
        subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    try:
        wait_healthy(started[0], f"{api}/health", tmp_path / "server.log", timeout_s=150)
        yield api, env, started
    finally:
        for process in reversed(started):
            stop(process)
        log.close()


def test_deploy_all_and_run_nightly_retrain_through_a_worker(
    server, demo_root: Path, tmp_path: Path
) -> None:
    api, env, started = server
    _cli(["work-pool", "create", "refsam-local", "--type", "process"], env, timeout=120)
    _cli(["--no-prompt", "deploy", "--all"], env, timeout=240)

    found = _api("POST", f"{api}/deployments/filter", json={}).json()
    flows = {f["id"]: f["name"] for f in _api("POST", f"{api}/flows/filter", json={}).json()}
    by_name = {d["name"]: d for d in found}
    assert {name: flows[d["flow_id"]] for name, d in by_name.items()} == EXPECTED
    assert all(d["work_pool_name"] == "refsam-local" for d in found)
    nightly = by_name["nightly"]  # the pull step's {{ $REFSAM_HOME }} is filled in at deploy time
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [
        ("0 3 * * *", True)
    ]
    assert nightly["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    assert nightly["parameters"]["config"] == "configs/demo-tiny-cpu.yaml"
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["name"] for d in declared["deployments"]} == set(EXPECTED)

    work = tmp_path / "work"
    overrides = [
        f"data.raw_root={demo_root / 'raw'}",
        f"data.shards_root={work / 'shards'}",
        f"data.heldout_root={demo_root / 'heldout'}",
        f"train.output_dir={work / 'outputs'}",
        f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
    ]
    created = _api(
        "POST",
        f"{api}/deployments/{nightly['id']}/create_flow_run",
        json={"parameters": {"config": "configs/smoke.yaml", "overrides": overrides}},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    worker_log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "refsam-local", "--run-once", "--limit", "1"],
        cwd=tmp_path,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started.append(worker)
    deadline = time.monotonic() + 480
    state = None
    while time.monotonic() < deadline:
        state = _api("GET", f"{api}/flow_runs/{run_id}").json()["state"]
        if state and state["type"] in TERMINAL:
            break
        time.sleep(2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=60)
    worker_log.close()
    tail = (tmp_path / "worker.log").read_text()[-4000:]
    assert state is not None and state["type"] == "COMPLETED", f"flow run state {state}:\n{tail}"
    assert worker.returncode == 0, tail

    from refsam.tracking import get_client

    client = get_client(TrackingConfig(uri=f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"))
    experiment = client.get_experiment_by_name("refsam-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`refsam.kind` = 'train'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["prefect.flow_run_id"] == run_id
    assert str(client.get_registered_model("refsam").aliases["champion"]) == "1"
    assert json.loads(json.dumps(runs[0].data.params))["train.run_name"].startswith("smoke-")
