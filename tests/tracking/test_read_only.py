"""Reading the MLflow store never creates one (issue 18.5): a missing sqlite store is a
one-line error naming the store and the variables that point at the right one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from refsam.cli import main
from refsam.config import TrackingConfig
from refsam.errors import UserError
from refsam.tracking import compare_runs, get_champion, resolve_model_uri

REPO = Path(__file__).resolve().parents[2]


def test_predict_with_a_model_uri_outside_the_project_creates_nothing(tmp_path: Path) -> None:
    """The README's ``refsam predict --model models:/refsam@champion`` run in a folder that
    is not the project: exit 2, one line, and no ``mlruns/`` left behind."""
    cwd, frames = tmp_path / "elsewhere", tmp_path / "frames"
    cwd.mkdir()
    frames.mkdir()
    Image.new("RGB", (32, 24)).save(frames / "00000.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "REFSAM_HOME")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "refsam.cli", "predict", "--model", "models:/refsam@champion"]
    command += ["--video", str(frames), "--text", "a cat", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    store = cwd.resolve() / "mlruns" / "mlflow.db"
    assert len(lines) == 1, done.stderr  # no MLflow table-creation log
    assert lines[0].startswith(f"refsam: error: no MLflow store at {store}")
    assert "MLFLOW_TRACKING_URI" in lines[0] and "REFSAM_HOME" in lines[0]
    assert list(cwd.iterdir()) == [] and not (tmp_path / "out").exists()


def test_reads_of_a_missing_store_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("REFSAM_HOME", str(tmp_path))
    db = tmp_path / "mlruns" / "mlflow.db"
    for uri in ("models:/refsam@champion", "models:/refsam/1", "runs:/abc/model"):
        with pytest.raises(UserError, match=f"no MLflow store at {db}: .*MLFLOW_TRACKING_URI"):
            resolve_model_uri(uri)
    assert get_champion() is None
    assert compare_runs() == []
    with pytest.raises(UserError, match="no MLflow store at"):
        compare_runs("refsam-demo")
    other = TrackingConfig(uri=f"sqlite:///{tmp_path / 'x' / 'other.db'}")
    with pytest.raises(UserError, match=f"no MLflow store at {tmp_path / 'x' / 'other.db'}"):
        resolve_model_uri("models:/refsam@champion", tracking=other)
    assert main(["runs", "compare", "--experiment", "refsam-demo"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["runs", "compare"]) == 0
    assert "no training runs" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
