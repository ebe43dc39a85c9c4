"""The retrain / evaluate flows end to end on a real ephemeral Prefect server and a real
MLflow sqlite store (tmp), with configs/smoke.yaml on the tiny demo data: the session's
retrain ``history`` (three runs into one registry, see tests/flows/history.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from refsam.config import TrackingConfig
from refsam.modeling.checkpoint import load_checkpoint
from refsam.tracking.provenance import metric_key
from tests.flows.history import CONFIG, History, smoke_overrides

pytestmark = pytest.mark.slow

SELECTION = "ref-davis17/valid/J&F"


def test_first_run_trains_evaluates_and_takes_champion(history: History) -> None:
    first = history.runs[0]
    assert [s["dataset"] + "/" + s["split"] for s in first.ingest] == [
        "refcoco/train",
        "ref-youtube-vos/train",
        "ref-davis17/valid",
        "ref-youtube-vos/valid",
    ]
    assert all(s["shards"] >= 1 and s["quarantined"] == 0 for s in first.ingest)
    assert [e.tag for e in first.evals] == ["ref-davis17/valid", "ref-youtube-vos/valid"]
    assert all(e.ok and 0.0 <= e.metrics["J&F"] <= 1.0 for e in first.evals)
    ytvos = first.evals[1]
    assert ytvos.submission and Path(ytvos.submission).is_file()
    assert Path(first.train.checkpoint).is_file() and first.train.steps == 4
    assert first.train.total_trainable > 0 and first.timings["total"] > 0
    d = first.decision
    assert d.promoted and d.version == "1" and d.champion_version is None
    assert d.champion_uri == "models:/refsam@champion" and Path(d.champion_checkpoint).is_file()
    assert d.value == first.evals[0].metrics["J&F"]
    assert first.train.mlflow_url.endswith(
        f"/runs/{first.train.mlflow_run_id}?workflowType=machine_learning"
    )


def test_training_run_holds_params_metrics_artifacts_and_decision(history: History) -> None:
    client = history.client()
    first = history.runs[0]
    run = client.get_run(first.train.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == first.train.run_name
    assert run.data.params["train.lr"] == "0.001" and run.data.params["model.variant"] == "tiny"
    params, tags = run.data.params, run.data.tags
    assert int(params["trainable_params"]) == first.train.total_trainable
    groups = {k.removeprefix("trainable/"): int(v) for k, v in params.items() if "trainable/" in k}
    assert groups == first.train.trainable_params  # one naming: no trainable_params.<group>
    assert not [k for k in params if k.startswith("trainable_params.")]
    version = client.get_model_version("refsam", "1")
    checkpoint = load_checkpoint(Path(first.train.checkpoint))
    assert (  # one config hash everywhere
        params["config_hash"]
        == tags["refsam.config_hash"]
        == checkpoint["config_hash"]
        == version.tags["refsam.config_hash"]
    )
    assert [o.model_id for o in run.outputs.model_outputs] == [
        version.source.removeprefix("models:/")
    ]  # the run's "Logged models"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    curve = client.get_metric_history(run.info.run_id, "val/ref-davis17/valid/J_and_F")
    assert sorted(m.step for m in curve) == [2, 4]
    jf = run.data.metrics[metric_key(f"eval/{SELECTION}")]
    assert jf == pytest.approx(first.decision.value)
    assert run.data.metrics["selection/candidate"] == pytest.approx(first.decision.value)
    assert run.data.tags["champion.promoted"] == "true"
    assert "train/loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots"} <= artifacts
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert plots == ["plots/jf_vs_step.png"]
    evals = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    assert sorted(r.data.tags["refsam.eval_set"] for r in evals) == [
        "ref-davis17/valid",
        "ref-youtube-vos/valid",
    ]
    assert all(r.info.status == "FINISHED" and "J_and_F" in r.data.metrics for r in evals)


def test_a_tie_keeps_the_champion(history: History) -> None:
    first, printed = history.runs[0], history.runs[1]
    value = f"{first.decision.value:.4f}"
    assert "==> pipeline summary" in printed and f"ref-davis17/valid  {value}" in printed
    assert "champion: kept" in printed and "tie with champion v1" in printed
    assert "refsam predict --checkpoint" in printed and "mlflow ui --backend-store-uri" in printed
    client = history.client()
    tags = client.get_model_version("refsam", "2").tags
    assert tags["decision.promoted"] == "false" and "tie" in tags["decision.reason"]
    assert (
        float(tags["decision.value"])
        == float(tags["decision.champion_value"])
        == first.decision.value
    )
    second_run = client.get_run(client.get_model_version("refsam", "2").run_id)
    assert second_run.info.run_id != first.train.mlflow_run_id  # a new MLflow run
    assert second_run.info.run_name != first.train.run_name  # and a new run directory
    assert second_run.data.tags["champion.promoted"] == "false"


def test_a_worse_model_rescored_champion_keeps_alias(history: History) -> None:
    first, third = history.runs[0], history.runs[2]
    d = third.decision
    assert d.manifest_hash != first.decision.manifest_hash  # other eval data (shard size 1)
    assert d.champion_rescored and d.champion_version == "1"
    assert d.champion_value == pytest.approx(first.decision.value)  # same videos, same model
    assert d.value < d.champion_value, (
        f"precondition: on the tiny demo data J&F at threshold 0.0001 ({d.value}) should be below "
        f"J&F at 0.9999 ({d.champion_value}); if the demo data changed, swap the two thresholds"
    )
    assert not d.promoted and "champion kept" in d.reason
    client = history.client()
    model = client.get_registered_model("refsam")
    assert str(model.aliases["champion"]) == "1"
    tags = client.get_model_version("refsam", "3").tags
    assert (
        tags["decision.promoted"] == "false"
        and float(tags["decision.champion_value"]) == d.champion_value
    )
    champion_tags = client.get_model_version("refsam", "1").tags
    assert champion_tags["eval.manifest_hash"] == d.manifest_hash  # the re-score was stored
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'refsam'")) == [
        1,
        2,
        3,
    ]


def test_evaluate_flow_reports_a_failing_set_and_scores_the_rest(
    history: History, demo_root: Path
) -> None:
    from flows.evaluate import EvalSetsFailed, evaluate_flow

    work = history.work
    overrides = smoke_overrides(demo_root, work)
    with pytest.raises(
        EvalSetsFailed,
        match=r"1 eval set\(s\) failed: mevis/valid: DataError: .*no shards of mevis/valid",
    ):
        evaluate_flow(
            "models:/refsam@champion",
            CONFIG,
            overrides,
            sets=["mevis/valid", "ref-davis17/valid"],
            out=str(work / "eval-champion"),
        )
    metrics = work / "eval-champion" / "ref-davis17-valid" / "metrics.json"
    assert metrics.is_file()  # the good set was still scored


def test_train_flow_launches_torchrun_when_devices_gt_1(
    prefect_harness: Path, demo_root: Path, tmp_path: Path
) -> None:
    """train.devices=2 on CPU: two gloo ranks under torchrun; rank 0 logs to the flow's run.
    The tracking module is on and stage 1 has one-frame clips, where its update gets no
    gradient: the trainer freezes it for that stage (all but the initial token), so DDP
    without find_unused_parameters works."""
    from flows.retrain import ingest_splits
    from flows.train import train_flow
    from refsam.config import load_config
    from refsam.tracking import get_client

    overrides = smoke_overrides(
        demo_root,
        tmp_path,
        "shards",
        "data.shard_size=1",
        "train.devices=2",
        "train.device=cpu",
        "eval.sets=[]",
    )
    ingest_splits(load_config(CONFIG, overrides))
    outcome = train_flow(CONFIG, overrides, run_name="ddp")
    assert outcome.devices == 2 and outcome.steps == 4 and outcome.run_name == "ddp"
    assert Path(outcome.checkpoint).is_file() and outcome.checkpoint.startswith(
        str(tmp_path / "outputs" / "ddp")
    )
    assert outcome.stages[0]["clips"] == 2 * 2 * 2  # batch 2 × 2 steps × 2 ranks
    run = get_client(TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")).get_run(
        outcome.mlflow_run_id
    )
    assert run.info.status == "FINISHED" and "train/loss" in run.data.metrics
    assert run.data.params["train.devices"] == "2" and run.data.params["model.tracking"] == "true"
    assert int(run.data.params["trainable/tracking"]) == outcome.trainable_params["tracking"] > 0
