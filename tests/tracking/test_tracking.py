"""Runs, params, metrics, tags, artifacts, resume, threads and compare on a real store."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from PIL import Image

from refsam.cli import main
from refsam.config import DataSplit, RefSAMConfig, StageConfig, TrackingConfig
from refsam.errors import UserError
from refsam.runlog import RunLogger
from refsam.tracking import (
    compare_runs,
    flatten_params,
    log_evaluation,
    log_jf_plot,
    metric_key,
    start_evaluation_run,
    start_training_run,
    tracking_uri,
)
from refsam.tracking.provenance import git_commit


def _cfg(name: str = "unit", **train: object) -> RefSAMConfig:
    stage = StageConfig(
        name="ytvos",
        datasets=[DataSplit(dataset="ref-youtube-vos", split="train")],
        steps=5,
        frames_per_clip=3,
    )
    return RefSAMConfig(name=name, train={"run_name": f"{name}-run", "stages": [stage], **train})


def _client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=store.uri)


def test_tracking_uri_precedence(store, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking_uri(TrackingConfig()) == store.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(TrackingConfig()) == "http://mlflow.example:5000"
    assert tracking_uri(TrackingConfig(uri="sqlite:////abs/x.db")) == "sqlite:////abs/x.db"
    relative = tracking_uri(TrackingConfig(uri="sqlite:///other/x.db"), project_root=store.root)
    assert relative == f"sqlite:///{store.root}/other/x.db"


def test_flatten_params_dotted_keys_and_length_limit() -> None:
    flat = flatten_params(
        {"train": {"lr": 1e-4, "stages": [{"name": "a", "steps": 3}]}, "x": "y" * 7000}
    )
    assert flat["train.lr"] == "0.0001"
    assert flat["train.stages.0.name"] == "a" and flat["train.stages.0.steps"] == "3"
    assert len(flat["x"]) == 6000 and flat["x"].endswith("[truncated]")
    assert metric_key("ref-davis17/valid/J&F") == "ref-davis17/valid/J_and_F"
    assert metric_key("data.refcoco+/train") == "data.refcoco_plus/train"


def test_git_commit_read_from_git_files(tmp_path: Path) -> None:
    (tmp_path / ".git/refs/heads").mkdir(parents=True)
    (tmp_path / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git/refs/heads/main").write_text("a" * 40 + "\n")
    assert git_commit(tmp_path / "sub") == ("a" * 40, "main")
    (tmp_path / ".git/refs/heads/main").unlink()
    (tmp_path / ".git/packed-refs").write_text(f"# pack-refs\n{'b' * 40} refs/heads/main\n")
    assert git_commit(tmp_path) == ("b" * 40, "main")


def test_training_run_logs_params_metrics_tags_artifacts(store, tmp_path: Path) -> None:
    cfg = _cfg()
    manifests = {"ref-youtube-vos/train": "abc123", "refcoco+/train": "def456"}
    table = tmp_path / "per_sequence.csv"
    table.write_text("video,J\nv1,0.5\n")
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays/worst.png").write_bytes(b"png")
    with start_training_run(cfg, data_manifests=manifests, system_metrics=False) as logger:
        for step in range(3):
            logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-4}, step)
        logger.log_artifact(table, "tables")
        logger.log_artifact(tmp_path / "overlays", "overlays")
        with pytest.raises(FileNotFoundError, match="no such file"):
            logger.log_artifact(tmp_path / "missing.pt")
    assert isinstance(logger, RunLogger)
    run = _client(store).get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "unit-run"
    params, tags = run.data.params, run.data.tags
    assert params["train.lr"] == "0.0001" and params["model.variant"] == "tiny"
    assert params["train.stages.0.frames_per_clip"] == "3"
    assert tags["refsam.config_hash"] == cfg.config_hash() and tags["refsam.kind"] == "train"
    assert (
        tags["data.ref-youtube-vos/train"] == "abc123"
        and tags["data.refcoco_plus/train"] == "def456"
    )
    assert {"git.commit", "versions.torch", "versions.transformers", "versions.refsam"} <= set(tags)
    assert tags["versions.segment_anything"] == "1.0"
    history = _client(store).get_metric_history(logger.run_id, "loss")
    assert [(m.step, round(m.value, 3)) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.5),
        (2, 0.333),
    ]
    artifacts = {a.path for a in _client(store).list_artifacts(logger.run_id)}
    assert {"config.yaml", "tables", "overlays"} <= artifacts
    assert [a.path for a in _client(store).list_artifacts(logger.run_id, "overlays")] == [
        "overlays/worst.png"
    ]
    experiment = _client(store).get_experiment(run.info.experiment_id)
    assert experiment.name == "unit"
    assert experiment.artifact_location == (store.root / "mlruns/artifacts/unit").as_uri()
    local = Path(_client(store).download_artifacts(logger.run_id, "config.yaml", str(tmp_path)))
    assert RefSAMConfig.model_validate(__import__("yaml").safe_load(local.read_text())) == cfg


def test_resumed_run_id_continues_the_same_run(store) -> None:
    cfg = _cfg("resume")
    first = start_training_run(cfg, system_metrics=False)
    first.log_metrics({"loss": 3.0}, 0)
    first.log_metrics({"loss": 2.0}, 1)
    first.end("KILLED")
    changed = _cfg("resume", lr=5e-4)
    with start_training_run(changed, run_id=first.run_id, system_metrics=False) as second:
        assert second.run_id == first.run_id
        assert _client(store).get_run(first.run_id).info.status == "RUNNING"
        second.log_metrics({"loss": 1.0}, 2)
    run = _client(store).get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["refsam.resumes"] == "1"
    assert run.data.params["train.lr"] == "0.0001"  # MLflow params are immutable…
    assert run.data.tags["param_changed.train.lr"] == "0.0005"  # …so the change is a tag
    assert [m.step for m in _client(store).get_metric_history(first.run_id, "loss")] == [0, 1, 2]
    assert len(_client(store).search_runs([run.info.experiment_id])) == 1
    with pytest.raises(UserError, match="not found in sqlite"):
        start_training_run(cfg, run_id="0" * 32, system_metrics=False)


def test_a_resumed_run_logs_each_step_once(store) -> None:
    """A killed training may have logged steps beyond its last checkpoint; the resumed one
    trains them again and must not log them twice (the first value is kept)."""
    first = start_training_run(_cfg("steps-once"), system_metrics=False)
    for step in (1, 2, 3):
        first.log_metrics({"train/loss": 10.0 + step, "eval/x/y/J&F": 0.5}, step)
    # killed here; the newest checkpoint is at step 1
    resumed = start_training_run(_cfg("steps-once"), run_id=first.run_id, system_metrics=False)
    with resumed:
        for step in (2, 3, 4):
            resumed.log_metrics({"train/loss": 20.0 + step, "eval/x/y/J&F": 0.7}, step)
    history = _client(store).get_metric_history(first.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [
        (1, 11.0),
        (2, 12.0),
        (3, 13.0),
        (4, 24.0),
    ]
    assert [
        m.step for m in _client(store).get_metric_history(first.run_id, "eval/x/y/J_and_F")
    ] == [
        1,
        2,
        3,
        4,
    ]


def test_compare_counts_trainable_params_once(store) -> None:
    """The train flow logs ``trainable_params.<group>`` and the trainer ``trainable/<group>``
    in the same run: without a total the two families are not added together."""
    with start_training_run(_cfg("families"), system_metrics=False) as logger:
        logger.log_params({"trainable/adapters": 1000, "trainable/mask_decoder": 234})
        logger.log_params({"trainable_params.adapters": 1000, "trainable_params.mask_decoder": 234})
    assert [r["trainable_params"] for r in compare_runs("families")] == [1234]


def test_logging_from_other_threads(store) -> None:
    logger = start_training_run(_cfg("threads"), system_metrics=False)

    def work(worker: int) -> str:
        for step in range(3):
            logger.log_metrics({f"worker{worker}/loss": float(step)}, step)
        with start_evaluation_run(
            _cfg("threads"), dataset="mevis", split="valid", run_name=f"e{worker}"
        ) as ev:
            ev.log_metrics({"J": 0.1 * worker}, 0)
        return threading.current_thread().name

    with ThreadPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(work, range(4)))
    logger.end()
    assert threading.current_thread().name not in names
    assert mlflow.active_run() is None
    metrics = _client(store).get_run(logger.run_id).data.metrics
    assert {f"worker{w}/loss" for w in range(4)} <= set(metrics)
    experiment = _client(store).get_experiment_by_name("threads")
    evals = _client(store).search_runs([experiment.experiment_id], "tags.`refsam.kind` = 'eval'")
    assert sorted(r.data.metrics["J"] for r in evals) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_evaluation_run_nested_copied_to_training_run_and_plotted(store, tmp_path: Path) -> None:
    cfg = _cfg("evals")
    train = start_training_run(cfg, system_metrics=False)
    csv = tmp_path / "seq.csv"
    csv.write_text("video,J\n")
    for step, jf in ((10, 0.4), (20, 0.55)):
        with start_evaluation_run(
            cfg, dataset="ref-davis17", split="valid", train_run_id=train.run_id
        ) as ev:
            metrics = {"J": jf - 0.05, "F": jf + 0.05, "J&F": jf, "n_objects": 3,
                       "J&F/motion": jf - 0.1, "n/motion": 2}  # fmt: skip
            log_evaluation(
                ev,
                "ref-davis17",
                "valid",
                metrics,
                step=step,
                train_run_id=train.run_id,
                files={"tables": csv, "zip": None},
            )
    client = _client(store)
    eval_run = client.get_run(ev.run_id)
    assert eval_run.data.tags["mlflow.parentRunId"] == train.run_id
    assert eval_run.data.metrics["J_and_F"] == pytest.approx(0.55)
    assert eval_run.data.metrics["J_and_F/motion"] == pytest.approx(0.45)  # expression subsets
    assert eval_run.data.metrics["n/motion"] == 2
    subset = client.get_metric_history(train.run_id, "eval/ref-davis17/valid/J_and_F/motion")
    assert [m.step for m in sorted(subset, key=lambda m: m.step)] == [10, 20]
    assert [m.value for m in sorted(subset, key=lambda m: m.step)] == pytest.approx([0.3, 0.45])
    assert [a.path for a in client.list_artifacts(ev.run_id, "tables")] == ["tables/seq.csv"]
    history = client.get_metric_history(train.run_id, "eval/ref-davis17/valid/J_and_F")
    assert sorted((m.step, m.value) for m in history) == [(10, 0.4), (20, 0.55)]
    png = log_jf_plot(train)
    train.end()
    assert png is not None and Image.open(png).size[0] >= 400
    assert [a.path for a in client.list_artifacts(train.run_id, "plots")] == [
        "plots/jf_vs_step.png"
    ]
    empty = start_training_run(cfg, system_metrics=False)
    assert log_jf_plot(empty) is None
    empty.end()


def test_system_metrics_are_logged(store) -> None:
    logger = start_training_run(
        _cfg("sysmetrics"), system_metrics=True, system_metrics_interval_s=0.2
    )
    time.sleep(1.0)
    logger.end()
    metrics = _client(store).get_run(logger.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)


def _finished_training(name: str, variant: str, lr: float, frames: int, jf: float) -> str:
    stage = StageConfig(
        name="s",
        datasets=[DataSplit(dataset="mevis", split="train")],
        steps=2,
        frames_per_clip=frames,
    )
    cfg = RefSAMConfig(
        name="compare",
        model={
            "variant": variant,
            "dense_path": "sentence" if variant == "tiny" else "hierarchical",
        },
        train={"run_name": name, "lr": lr, "stages": [stage]},
    )
    with start_training_run(
        cfg, data_manifests={"mevis/train": f"hash-{name}"}, system_metrics=False
    ) as logger:
        logger.log_params({"trainable/adapters": 1000, "trainable/mask_decoder": 234})
        logger.log_metrics(
            {
                "eval/ref-davis17/valid/J": jf,
                "eval/ref-davis17/valid/F": jf,
                "eval/ref-davis17/valid/J&F": jf,
            },
            5,
        )
    return logger.run_id


def test_compare_runs_and_cli(store, capsys: pytest.CaptureFixture[str]) -> None:
    old = _finished_training("old", "tiny", 1e-4, 3, 0.41)
    time.sleep(0.01)
    new = _finished_training("new", "vit_b", 3e-4, 5, 0.62)
    rows = compare_runs("compare", last=5)
    assert [r["run_id"] for r in rows] == [new, old]
    row = rows[0]
    assert (row["variant"], row["lr"], row["frames_per_clip"], row["trainable_params"]) == (
        "vit_b",
        3e-4,
        "5",
        1234,
    )
    assert row["text_encoder"] == "MiniLM (packaged)" and row["data"] == {"mevis/train": "hash-new"}
    assert (rows[0]["dense_path"], rows[1]["dense_path"]) == ("hierarchical", "sentence")
    assert rows[0]["tracking"] == "true"
    assert row["eval"]["ref-davis17/valid"] == pytest.approx({"J": 0.62, "F": 0.62, "J&F": 0.62})
    assert [r["run_id"] for r in compare_runs("compare", last=1)] == [new]
    assert all(
        r["experiment"] != "compare" or r["run_id"] in (new, old) for r in compare_runs(last=50)
    )
    with pytest.raises(UserError, match="no MLflow experiment 'nope'"):
        compare_runs("nope")
    assert main(["runs", "compare", "--last", "2", "--experiment", "compare"]) == 0
    out = capsys.readouterr().out
    assert "vit_b" in out and "tiny" in out and "ref-davis17/valid J&F" in out and "0.62" in out
    assert "dense path" in out and "sentence" in out and "track token" in out
    assert out.index("vit_b") < out.index("tiny")  # newest first (left)
    assert main(["runs", "compare", "--last", "0"]) == 2
    assert "argument --last: expected a positive integer" in capsys.readouterr().err


def test_experiments_are_marked_for_model_training(store) -> None:
    """The MLflow UI opens a ``custom_model_development`` experiment on its training runs
    (not the GenAI views); experiments made before refsam set the kind get it when a run
    starts, and a kind the user chose is kept."""
    client = _client(store)
    with start_training_run(_cfg("kind-new"), system_metrics=False):
        pass
    old = client.create_experiment("kind-old")
    client.create_experiment("kind-chosen", tags={"mlflow.experimentKind": "finetuning"})
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    with start_training_run(_cfg("kind-old"), system_metrics=False):
        pass
    with start_evaluation_run(_cfg("kind-chosen"), dataset="mevis", split="valid"):
        pass
    kinds = {
        name: client.get_experiment_by_name(name).tags.get("mlflow.experimentKind")
        for name in ("kind-new", "kind-old", "kind-chosen")
    }
    assert kinds == {
        "kind-new": "custom_model_development",
        "kind-old": "custom_model_development",
        "kind-chosen": "finetuning",
    }


def _seed_run(temporal: str, seed: int, jf: float, motion: float, status_ok: bool = True) -> None:
    cfg = RefSAMConfig(
        name="ablation",
        model={"variant": "tiny", "temporal": temporal},
        train={"run_name": f"{temporal}-s{seed}", "seed": seed},
    )
    logger = start_training_run(cfg, system_metrics=False)
    logger.log_metrics(
        {
            "eval/ref-youtube-vos/valid/J&F": jf,
            "eval/ref-youtube-vos/valid/J&F/motion": motion,
            "eval/ref-youtube-vos/valid/J&F/appearance": jf + 0.1,
        },
        5,
    )
    logger.end("FINISHED" if status_ok else "FAILED")


def test_ablation_groups_runs_by_switches_over_seeds(
    store, capsys: pytest.CaptureFixture[str]
) -> None:
    from refsam.tracking.ablation import group_runs

    for seed, (jf, motion) in enumerate([(0.50, 0.30), (0.60, 0.40)]):
        _seed_run("none", seed, jf, motion)
        _seed_run("window", seed, jf + 0.1, motion + 0.3)
    _seed_run("window", 2, 0.0, 0.0, status_ok=False)  # a failed run does not count
    _seed_run("none", 1, 0.70, 0.50)  # seed 1 rerun: the newest run counts
    rows = compare_runs("ablation", last=10)
    assert {(r["temporal"], r["seed"]) for r in rows} >= {("none", "0"), ("window", "1")}
    assert rows[0]["eval"]["ref-youtube-vos/valid"]["J&F/motion"] == pytest.approx(0.5)
    groups = {g.switches["temporal"]: g for g in group_runs(rows)}
    assert groups.keys() == {"none", "window"}
    assert groups["none"].seeds == groups["window"].seeds == ["0", "1"]
    none = groups["none"].metrics
    assert none["ref-youtube-vos/valid J&F"].mean == pytest.approx(0.60)  # 0.50 and 0.70
    assert none["ref-youtube-vos/valid J&F/motion"].high == pytest.approx(0.50)
    window = groups["window"].metrics["ref-youtube-vos/valid J&F/motion"]
    assert (window.mean, window.low, window.n) == pytest.approx((0.65, 0.6, 2))
    assert window.sd == pytest.approx(0.0707, abs=1e-4)
    assert main(["runs", "ablation", "--experiment", "ablation", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "| metric | hierarchical, track, temporal none | hierarchical, track, temporal window |"
    )
    assert "| ref-youtube-vos/valid J&F/motion | 0.400 ± 0.141 [0.300–0.500] |" in out
    assert "| seeds | 0,1 | 0,1 |" in out
    assert main(["runs", "compare", "--experiment", "ablation", "--last", "1"]) == 0
    assert "ref-youtube-vos/valid J&F/motion" in capsys.readouterr().out
