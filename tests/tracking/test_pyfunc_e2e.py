"""End to end: a real tiny RefSAM checkpoint, registered, loaded back as the champion
pyfunc model with MLflow and run on a frame folder (slow: builds the model twice)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from refsam.config import RefSAMConfig
from refsam.data.rle import decode_rle
from refsam.tracking import promote_if_better, register_checkpoint, start_training_run
from refsam.train.checkpoint import FORMAT
from refsam.train.state import build_model, model_state


@pytest.mark.slow
def test_champion_pyfunc_predicts_masks(store, tmp_path: Path) -> None:
    cfg = RefSAMConfig(name="pyfunc-e2e", tracking={"registered_model": "rs-e2e"})
    checkpoint = tmp_path / "best.pt"
    payload = {
        "format": FORMAT,
        "model": model_state(build_model(cfg), full=False),
        "model_scope": "trainable",
        "config_yaml": cfg.to_yaml(),
        "sam_checkpoint": None,
    }
    torch.save(payload, checkpoint)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        Image.fromarray(np.full((40, 60, 3), 40 * index, np.uint8)).save(
            frames / f"{index:05d}.jpg"
        )
    with start_training_run(cfg, system_metrics=False) as logger:
        pass
    version = register_checkpoint(logger.run_id, checkpoint, cfg, {}, device="cpu")
    assert promote_if_better(None, version, 0.1, None, tracking=cfg.tracking).promoted

    model = mlflow.pyfunc.load_model("models:/rs-e2e@champion")  # via MLFLOW_TRACKING_URI
    texts = ["the red circle", "a blue square"]
    out = model.predict(pd.DataFrame({"video": [str(frames)] * 2, "text": texts}))
    assert list(out.columns) == ["video", "text", "frame", "score", "mask"]
    assert sorted(zip(out["frame"], out["text"], strict=True)) == [
        (f, t) for f in (0, 1) for t in sorted(texts)
    ]
    mask = decode_rle(json.loads(out["mask"].iloc[0]), 40, 60)
    assert mask.shape == (40, 60) and mask.dtype == bool


@pytest.fixture(autouse=True)
def _registry_uri(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.pyfunc.load_model`` (fluent API) reads the store from the environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
