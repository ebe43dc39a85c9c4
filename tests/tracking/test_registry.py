"""Registry on a real store: register, champion rules (strict improvement), resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from refsam.config import RefSAMConfig, TrackingConfig
from refsam.errors import UserError
from refsam.fsio import file_sha256
from refsam.tracking import (
    Champion,
    ChampionMismatchError,
    get_champion,
    promote_if_better,
    register_checkpoint,
    resolve_model_uri,
    start_training_run,
)

SELECTION = "ref-davis17/valid/J&F"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fake checkpoint: a state dict and the resolved config."""
    path = tmp_path_factory.mktemp("ckpt") / "step_000010.pt"
    torch.save(
        {"model": {"w": torch.arange(4.0)}, "config": RefSAMConfig().model_dump(mode="json")}, path
    )
    return path


def _register(cfg: RefSAMConfig, checkpoint: Path, jf: float, manifest: str = "m1") -> str:
    with start_training_run(cfg, system_metrics=False) as logger:
        pass
    metrics = {SELECTION: jf, "ref-davis17/valid/J": jf - 0.01}
    return register_checkpoint(logger.run_id, checkpoint, cfg, metrics, manifest_hash=manifest)


def test_register_and_champion_moves_only_on_strict_improvement(store, checkpoint: Path) -> None:
    cfg = RefSAMConfig(name="registry", tracking={"registered_model": "rs-champ"})
    tracking = cfg.tracking
    assert get_champion(tracking=tracking) is None  # no registered model yet
    v1 = _register(cfg, checkpoint, 0.50)
    assert get_champion(tracking=tracking) is None  # registered, no alias yet
    first = promote_if_better(None, v1, 0.50, "m1", tracking=tracking)
    assert first.promoted and first.champion_version is None and "no champion" in first.reason
    assert get_champion(tracking=tracking) == Champion(v1, 0.50, "m1")

    v2 = _register(cfg, checkpoint, 0.60)
    better = promote_if_better("rs-champ", v2, 0.60, "m1", tracking=tracking)
    assert better.promoted and (better.champion_version, better.champion_value) == (v1, 0.50)
    assert get_champion("rs-champ", tracking=tracking) == Champion(v2, 0.60, "m1")

    v3 = _register(cfg, checkpoint, 0.55)
    worse = promote_if_better("rs-champ", v3, 0.55, "m1", tracking=tracking)
    assert not worse.promoted and "champion kept" in worse.reason
    v4 = _register(cfg, checkpoint, 0.60)
    tie = promote_if_better("rs-champ", v4, 0.60, "m1", tracking=tracking)
    assert not tie.promoted and "tie" in tie.reason
    assert get_champion(tracking=tracking).version == v2
    again = promote_if_better("rs-champ", v2, 0.60, "m1", tracking=tracking)
    assert not again.promoted and "already the champion" in again.reason

    client = MlflowClient(tracking_uri=store.uri)
    tags = client.get_model_version("rs-champ", v4).tags
    assert tags["decision.promoted"] == "false" and "tie" in tags["decision.reason"]
    assert (
        tags["decision.champion_version"] == v2 and float(tags["decision.champion_value"]) == 0.60
    )
    assert (
        client.get_model_version("rs-champ", v2).tags["decision.promoted"] == "false"
    )  # last decision
    assert client.get_model_version("rs-champ", v1).tags["decision.promoted"] == "true"
    assert tags["selection.metric"] == SELECTION and float(tags["selection.value"]) == 0.60
    assert not [k for k in tags if k.startswith("metric.")]  # the numbers live on the runs
    assert {k: str(v) for k, v in client.get_registered_model("rs-champ").aliases.items()} == {
        "champion": v2
    }

    v5 = _register(cfg, checkpoint, 0.58, manifest="m2")  # new eval data
    with pytest.raises(ChampionMismatchError, match="re-score the champion"):
        promote_if_better("rs-champ", v5, 0.58, "m2", tracking=tracking)
    rescored = Champion(v2, 0.57, "m2")
    moved = promote_if_better("rs-champ", v5, 0.58, "m2", current=rescored, tracking=tracking)
    assert moved.promoted and moved.champion_value == 0.57
    assert client.get_model_version("rs-champ", v2).tags["eval.manifest_hash"] == "m2"
    assert get_champion(tracking=tracking) == Champion(v5, 0.58, "m2")
    with pytest.raises(UserError, match="has no version '99'"):
        promote_if_better("rs-champ", "99", 1.0, "m2", tracking=tracking)


def test_registered_version_is_a_pyfunc_model_and_resolves(
    store, checkpoint: Path, tmp_path: Path
) -> None:
    cfg = RefSAMConfig(name="registry", tracking={"registered_model": "rs-resolve"})
    version = _register(cfg, checkpoint, 0.3)
    promote_if_better(None, version, 0.3, "m1", tracking=cfg.tracking)
    path = resolve_model_uri("models:/rs-resolve@champion")
    assert path.is_file() and path.name == checkpoint.name
    assert file_sha256(path) == file_sha256(checkpoint)
    assert str(path).startswith(
        str(store.root / "mlruns/artifacts/registry/models")
    )  # local store: no copy
    assert torch.load(path)["model"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert resolve_model_uri(f"models:/rs-resolve/{version}") == path
    assert resolve_model_uri("models:/rs-resolve/latest") == path
    assert resolve_model_uri(str(checkpoint)) == checkpoint.resolve()

    client = MlflowClient(tracking_uri=store.uri)
    mv = client.get_model_version("rs-resolve", version)
    model_id = mv.source.removeprefix("models:/")
    model = client.get_logged_model(model_id)  # an MLflow 3 logged model…
    assert model.source_run_id == mv.run_id and str(model.status) == "READY"
    assert model.name == "model" and mv.source == f"models:/{model.model_id}"
    assert __import__("json").loads(model.tags["mlflow.modelVersions"]) == [
        {"name": "rs-resolve", "version": version}
    ]
    run = client.get_run(mv.run_id)  # …that the run lists under "Logged models"
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    model_dir = path.parent.parent  # <logged model artifacts>/
    assert model_dir.as_uri() == model.artifact_location
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["model_id"] == model_id and mlmodel["run_id"] == mv.run_id
    assert (
        mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    )
    assert (model_dir / "pyfunc_code.py").is_file()
    assert [c["name"] for c in __import__("json").loads(mlmodel["signature"]["inputs"])] == [
        "video",
        "text",
    ]
    assert (
        RefSAMConfig.model_validate(
            yaml.safe_load((model_dir / "artifacts/config.yaml").read_text())
        )
        == cfg
    )
    run_id = mv.run_id
    second = register_checkpoint(run_id, checkpoint, cfg, {SELECTION: 0.2})  # same run again
    second_path = resolve_model_uri(f"models:/rs-resolve/{second}")
    assert second_path.is_file() and second_path != path
    assert resolve_model_uri(f"models:/rs-resolve/{version}") == path
    assert len(client.get_run(run_id).outputs.model_outputs) == 2

    for uri, message in [
        ("models:/nope@champion", "no registered model 'nope'"),
        ("models:/rs-resolve@best", "has no alias 'best' \\(aliases: champion→v"),
        ("models:/rs-resolve/42", "has no version '42'"),
        ("models:/rs-resolve", "expected models:/<name>@<alias>"),
        (f"runs:/{run_id}/model/missing.pt", "artifact 'model/missing.pt' not found"),
        ("runs:/" + "0" * 32 + "/x", "not found in sqlite"),
        (str(tmp_path / "missing.pt"), "no such checkpoint file"),
    ]:
        with pytest.raises(UserError, match=message):
            resolve_model_uri(uri)


def test_register_errors(store, checkpoint: Path, tmp_path: Path) -> None:
    cfg = RefSAMConfig(name="registry", tracking=TrackingConfig(registered_model="rs-errors"))
    with pytest.raises(UserError, match="checkpoint file not found"):
        register_checkpoint("0" * 32, tmp_path / "none.pt", cfg, {})
    with pytest.raises(UserError, match="not found in sqlite"):
        register_checkpoint("0" * 32, checkpoint, cfg, {})
