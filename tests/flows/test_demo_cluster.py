"""``make demo-cluster`` (flows/cluster.py) with configs/smoke.yaml: real S3, MLflow,
Prefect and Dask server processes on loopback, the nightly deployment run once through a
process worker against them, then every process stopped."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from flows.cluster import run_cluster
from refsam.config import TrackingConfig
from refsam.errors import UserError

pytestmark = pytest.mark.slow


def test_nightly_deployment_against_local_team_services(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    code = run_cluster(
        "configs/smoke.yaml",
        tmp_path / "cluster",
        raw=demo_root / "raw",
        heldout=demo_root / "heldout",
    )
    out = capsys.readouterr().out
    logs = tmp_path / "cluster" / "logs"
    assert code == 0, out + (logs / "prefect-worker.log").read_text()[-4000:]
    assert re.search(r"nightly flow run \S+: COMPLETED", out)
    counts = dict(re.findall(r"s3://refsam-demo/(\w+): (\d+) objects", out))
    assert int(counts["shards"]) > 0 and int(counts["mlflow"]) > 0, out
    # every process the cluster started is gone
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, [psutil.Process(pid).cmdline() for pid in left if psutil.pid_exists(pid)]
    # the MLflow server's backend store holds the run and the champion
    from refsam.tracking import get_client

    client = get_client(TrackingConfig(uri=f"sqlite:///{tmp_path / 'cluster' / 'mlflow.db'}"))
    experiment = client.get_experiment_by_name("refsam-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`refsam.kind` = 'train'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["data.shards_root"] == "s3://refsam-demo/shards"
    assert str(client.get_registered_model("refsam").aliases["champion"]) == "1"
    assert runs[0].info.artifact_uri.startswith("mlflow-artifacts:")


def test_missing_demo_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="make demo-data"):
        run_cluster("configs/smoke.yaml", tmp_path, raw=tmp_path / "nope", heldout=tmp_path)
