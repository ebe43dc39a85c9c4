"""``refsam train`` end to end on configs/smoke.yaml (tiny demo shards), then ``evaluate``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.modeling.checkpoint import load_checkpoint

from .conftest import CONFIGS


@pytest.mark.slow
def test_smoke_train_then_evaluate(
    tiny_shards: Path, demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = ["--set", f"data.shards_root={tiny_shards}", "--set", f"data.heldout_root={demo_root / 'heldout'}",
            "--set", f"train.output_dir={tmp_path}"]  # fmt: skip
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIGS / "smoke.yaml"),
                "--device",
                "cpu",
                "--no-tracking",
                *sets,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and "ref-davis17/valid/J&F" in out
    run = tmp_path / "smoke"
    best = run / "checkpoints" / "best.pt"
    latest = tmp_path / "smoke-latest"  # the README's outputs/<run_name>-latest
    assert (
        latest.is_symlink() and os.readlink(latest) == "smoke" and latest.resolve() == run.resolve()
    )
    payload = load_checkpoint(best)
    assert payload["progress"]["step"] == 4 and payload["model_scope"] == "trainable"
    assert set(payload["data_manifests"]) >= {
        "refcoco/train",
        "ref-youtube-vos/train",
        "ref-davis17/valid",
    }
    assert payload["config_yaml"].startswith("name: smoke")
    assert {"torch", "numpy", "python"} <= set(payload["rng"])
    assert set(payload["metrics"]) >= {"ref-davis17/valid/J&F", "ref-youtube-vos/valid/J&F"}
    for name in ("ref-davis17-valid", "ref-youtube-vos-valid"):
        assert (run / "eval" / "final" / name / "metrics.json").is_file()
    assert (run / "eval" / "final" / "ref-youtube-vos-valid" / "submission.zip").is_file()

    eval_out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(best), "--dataset", "ref-davis17", "--split", "valid",
                 "--out", str(eval_out), "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.startswith("ref-davis17/valid: J&F=")
    record = json.loads((eval_out / "metrics.json").read_text())
    assert record["metrics"]["J&F"] == pytest.approx(payload["metrics"]["ref-davis17/valid/J&F"])
