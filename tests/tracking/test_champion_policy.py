"""The retrain's champion policy (refsam.tracking.champion) on a real store, the logged
model it registers, and the champion mark of ``refsam runs compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from refsam.cli import main
from refsam.config import DataSplit, RefSAMConfig
from refsam.data.index import FORMAT
from refsam.fsio import file_sha256
from refsam.tracking import (
    compare_runs,
    decide_champion,
    get_champion,
    resolve_model_uri,
    start_training_run,
)

SELECTION = "ref-davis17/valid/J&F"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": {"w": torch.ones(2)}}, path)
    return path


def _cfg(shards: Path, name: str = "policy") -> RefSAMConfig:
    return RefSAMConfig(
        name=name,
        data={"shards_root": str(shards)},
        train={"run_name": name},
        eval={"selection": SELECTION},
        tracking={"registered_model": "refsam"},  # the default: what `runs compare` marks
    )


def _shards(root: Path, version: int) -> Path:
    """A split whose manifest differs by ``version`` (only its hash matters here)."""
    (root / "ref-davis17" / "valid").mkdir(parents=True)
    manifest = {"format": FORMAT, "dataset": "ref-davis17", "split": "valid", "v": version}
    (root / "ref-davis17" / "valid" / "manifest.json").write_text(json.dumps(manifest))
    return root


def _trained(cfg: RefSAMConfig, jf: float | None, step: int = 4) -> str:
    with start_training_run(cfg, system_metrics=False) as logger:
        if jf is not None:
            logger.log_metrics({f"eval/{SELECTION}": jf, "eval/ref-davis17/valid/J": jf}, step)
    return logger.run_id


def test_policy_registers_rescores_and_promotes_only_on_improvement(
    store, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri=store.uri)
    cfg = _cfg(_shards(tmp_path / "s1", 1))
    calls: list[tuple[str, str, str, str]] = []

    def rescore(version: str, split: DataSplit, metric: str, digest: str) -> float:
        calls.append((version, split.tag, metric, digest))
        return 0.45

    run1 = _trained(cfg, 0.5)
    first = decide_champion(cfg, run1, checkpoint, {SELECTION: 0.5}, rescore=rescore, step=4)
    assert first.promoted and first.version == "1" and first.champion_version is None
    assert first.manifest_hash == file_sha256(tmp_path / "s1/ref-davis17/valid/manifest.json")
    assert first.champion_uri == "models:/refsam@champion"
    assert file_sha256(Path(first.champion_checkpoint)) == file_sha256(checkpoint)
    model_id = client.get_model_version("refsam", "1").source.removeprefix("models:/")
    metrics = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert metrics == {"eval/ref-davis17/valid/J_and_F": 0.5, "eval/ref-davis17/valid/J": 0.5}

    tie = decide_champion(cfg, _trained(cfg, 0.5), checkpoint, {SELECTION: 0.5}, rescore=rescore)
    assert not tie.promoted and "tie with champion v1" in tie.reason and calls == []

    other = _cfg(_shards(tmp_path / "s2", 2))  # new eval data: re-score first
    worse = decide_champion(
        other, _trained(other, 0.4), checkpoint, {SELECTION: 0.4}, rescore=rescore
    )
    digest = file_sha256(tmp_path / "s2/ref-davis17/valid/manifest.json")
    assert calls == [("1", "ref-davis17/valid", "J&F", digest)]
    assert worse.champion_rescored and worse.champion_value == 0.45 and not worse.promoted
    assert get_champion(tracking=other.tracking).manifest_hash == digest  # stored

    failed = decide_champion(other, _trained(other, None), checkpoint, {}, rescore=rescore)
    assert not failed.promoted and failed.version == "4" and failed.value is None
    assert "has no ref-davis17/valid/J&F (its eval set failed" in failed.reason
    bare = _cfg(tmp_path / "none")
    missing = decide_champion(
        bare, _trained(bare, 0.9), checkpoint, {SELECTION: 0.9}, rescore=rescore
    )
    assert not missing.promoted and f"no shards at {tmp_path / 'none'}" in missing.reason
    assert str(client.get_registered_model("refsam").aliases["champion"]) == "1"
    assert resolve_model_uri("models:/refsam@champion") == Path(first.champion_checkpoint)

    rows = compare_runs("policy", last=10, tracking=cfg.tracking)
    assert [r["run_id"] for r in rows if r["champion"]] == [run1]
    assert next(r for r in rows if r["run_id"] == run1)["champion"] == "1"
    capsys.readouterr()
    assert main(["runs", "compare", "--experiment", "policy", "--last", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    champion, ids = lines[0], next(line for line in lines if line.startswith("run id"))
    assert champion.startswith("champion") and champion.count("★") == 1
    assert champion.index("★ v1") == ids.index(run1)  # in the column of run 1
