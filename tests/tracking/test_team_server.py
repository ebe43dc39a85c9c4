"""A team MLflow server: a real ``mlflow server`` process (sqlite backend here, PostgreSQL in
production) whose artifacts it proxies to an S3 bucket on the loopback S3 server of
tests/s3server.py. refsam runs as a client that knows only the server's URL
(``tracking.uri`` for the pipeline, ``MLFLOW_TRACKING_URI`` for predict) and has no S3
credentials: the smoke pipeline's training run, its nested evaluation runs, the registered
version and its ``champion`` alias land on the server, every artifact in the bucket and
none in a local ``mlruns/``; ``refsam predict --model models:/refsam@champion`` downloads
the champion through the server.

A tracking URI where no server listens fails in seconds with one line naming the URI.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.config import TrackingConfig
from tests.s3server import S3Server
from tests.servers import free_port, mlflow_env, mlflow_process, run_in_session

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "smoke.yaml"
PREFIX = "mlflow"  # the bucket folder the server writes artifacts under
PIPELINE_TIMEOUT_S = 420
PREDICT_TIMEOUT_S = 180


@dataclass(frozen=True)
class TeamServer:
    url: str
    bucket: str
    s3: S3Server
    home: Path  # the server's working directory


@pytest.fixture
def team_server(s3_server: S3Server, tmp_path: Path) -> Iterator[TeamServer]:
    """``mlflow server --artifacts-destination s3://<new bucket>/mlflow`` on loopback; only
    the server process gets the S3 endpoint and credentials."""
    bucket = s3_server.new_bucket("mlflow")
    home = tmp_path / "server"
    home.mkdir()
    env = mlflow_env({**s3_server.env, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint})
    options = [
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{bucket}/{PREFIX}",
    ]
    with mlflow_process(
        "server", options, tmp_path / "mlflow-server.log", env=env, cwd=home
    ) as url:
        yield TeamServer(url, bucket, s3_server, home)


def _client_env(tmp_path: Path, project: Path, **extra: str) -> dict[str, str]:
    """A client's environment: no S3 credentials or endpoint, no MLflow or Prefect settings
    of this process; this worktree's code, its own project root and Prefect home."""
    dropped = ("AWS_", "MLFLOW_", "PREFECT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        REFSAM_HOME=str(project),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        **extra,
    )
    return env


def _refsam(words: list[str], log: Path, env: dict[str, str], cwd: Path, timeout_s: float) -> str:
    code = run_in_session(
        [sys.executable, "-m", "refsam.cli", *words], log, env=env, cwd=cwd, timeout_s=timeout_s
    )
    output = log.read_text()
    assert code == 0, f"refsam {words[0]} exited {code}:\n{output[-4000:]}"
    return output


def _video(demo_root: Path) -> Path:
    return sorted((demo_root / "raw/ref-davis/DAVIS/JPEGImages/480p").iterdir())[0]


@pytest.mark.slow
def test_pipeline_and_predict_against_a_team_server(
    team_server: TeamServer, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, work = tmp_path / "project", tmp_path / "work"
    project.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # only tracking.uri names it
    monkeypatch.chdir(project)
    words = ["pipeline", "--config", str(CONFIG)]
    for override in (
        f"data.raw_root={demo_root / 'raw'}",
        f"data.shards_root={work / 'shards'}",
        f"data.heldout_root={demo_root / 'heldout'}",
        f"train.output_dir={work / 'outputs'}",
        f"tracking.uri={team_server.url}",
    ):
        words += ["--set", override]
    env = _client_env(tmp_path, project)
    printed = _refsam(words, tmp_path / "pipeline.log", env, project, PIPELINE_TIMEOUT_S)
    assert f"MLFLOW_TRACKING_URI={team_server.url} .venv/bin/refsam predict" in printed

    from refsam.fsio import file_sha256
    from refsam.tracking import get_client, resolve_model_uri

    tracking = TrackingConfig(uri=team_server.url)
    client = get_client(tracking)
    experiment = client.get_experiment_by_name("refsam-smoke")
    (train,) = client.search_runs([experiment.experiment_id], "tags.`refsam.kind` = 'train'")
    assert train.info.status == "FINISHED" and train.info.artifact_uri.startswith(
        "mlflow-artifacts:"
    )  # proxied: the client never sees the bucket
    assert train.data.params["train.lr"] == "0.001" and "train/loss" in train.data.metrics
    assert "eval/ref-davis17/valid/J_and_F" in train.data.metrics
    evals = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{train.info.run_id}'"
    )
    assert sorted(r.data.tags["refsam.eval_set"] for r in evals) == [
        "ref-davis17/valid",
        "ref-youtube-vos/valid",
    ]
    assert all(r.info.status == "FINISHED" and "J_and_F" in r.data.metrics for r in evals)
    model = client.get_registered_model("refsam")
    assert str(model.aliases["champion"]) == "1"
    version = client.get_model_version("refsam", "1")
    assert version.run_id == train.info.run_id
    champion = resolve_model_uri("models:/refsam@champion", tracking=tracking)  # downloaded
    assert file_sha256(champion) == version.tags["checkpoint.sha256"]
    assert any(part.startswith("refsam-model-") for part in champion.parts)  # removed at exit

    keys = team_server.s3.keys(team_server.bucket)  # the test's S3 credentials
    model_id = version.source.removeprefix("models:/")
    checkpoint = f"/models/{model_id}/artifacts/artifacts/best.pt"
    assert [k for k in keys if k.endswith(checkpoint)] == [
        f"{PREFIX}/{experiment.experiment_id}{checkpoint}"
    ]
    run_keys = {k for k in keys if f"/{train.info.run_id}/artifacts/" in k}
    assert {k.rpartition("/artifacts/")[2] for k in run_keys} == {
        "config.yaml",
        "plots/jf_vs_step.png",
    }
    for run in evals:
        assert any(f"/{run.info.run_id}/artifacts/tables/" in k for k in keys)
    local = [p for p in tmp_path.rglob("*") if p.name in ("mlruns", "mlartifacts", "mlflow.db")]
    assert local == [team_server.home / "mlflow.db"]  # the server's backend store only
    assert [p.name for p in team_server.home.iterdir()] == ["mlflow.db"]

    out = tmp_path / "predict"
    predict = ["predict", "--model", "models:/refsam@champion", "--video", str(_video(demo_root))]
    predict += ["--text", "the big red square", "--out", str(out), "--device", "cpu"]
    env = _client_env(tmp_path, project, MLFLOW_TRACKING_URI=team_server.url)
    _refsam(predict, tmp_path / "predict.log", env, project, PREDICT_TIMEOUT_S)
    masks = sorted((out / "masks" / "exp-00").glob("*.png"))
    assert len(masks) == len(list(_video(demo_root).glob("*.jpg"))) > 0
    assert not (project / "mlruns").exists()


def test_no_server_at_the_tracking_uri_is_one_line_naming_it(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REFSAM_HOME", str(tmp_path))
    words = ["predict", "--model", "models:/refsam@champion", "--video", str(_video(demo_root))]
    start = time.monotonic()
    code = main([*words, "--text", "the car", "--out", str(tmp_path / "out"), "--device", "cpu"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < 30, (code, elapsed)
    assert err.startswith("refsam: error: no MLflow tracking server answers at " + uri), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "mlruns").exists()
