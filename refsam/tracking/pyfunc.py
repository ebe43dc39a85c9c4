"""The registered model's python-function flavour: a checkpoint wrapped for ``predict()``.

A model version's artifact folder (``model/``) is an MLflow pyfunc model holding the
training checkpoint (state dict + resolved config) and ``config.yaml``. Loaded with
``mlflow.pyfunc.load_model("models:/refsam@champion")``, its ``predict`` takes a pandas
DataFrame with columns ``video`` (a frame folder or video file path) and ``text`` (one
referring expression per row) and runs the online predictor once per video for all of
that video's expressions. It returns one row per (input row, frame): ``video``, ``text``,
``frame`` (index), ``score`` (predicted IoU) and ``mask`` (COCO RLE as JSON text at the
frame's original size).

The model code is imported lazily in :meth:`RefSAMPythonModel.load_context`, so
registering a checkpoint does not need (or build) the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

CHECKPOINT_KEY = "checkpoint"
CONFIG_KEY = "config"
INPUT_COLUMNS = ("video", "text")
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "video"), ColSpec("string", "text")]),
    outputs=Schema(
        [
            ColSpec("string", "video"),
            ColSpec("string", "text"),
            ColSpec("long", "frame"),
            ColSpec("double", "score"),
            ColSpec("string", "mask"),
        ]
    ),
)


class RefSAMPythonModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper of :class:`refsam.eval.predictor.OnlinePredictor` (see module doc)."""

    def load_context(self, context: Any) -> None:
        from refsam.eval.predictor import OnlinePredictor
        from refsam.modeling.checkpoint import model_from_checkpoint
        from refsam.modeling.device import resolve_device

        device = resolve_device((context.model_config or {}).get("device", "auto"))
        model, cfg = model_from_checkpoint(Path(context.artifacts[CHECKPOINT_KEY]), device)
        self.predictor = OnlinePredictor(model, device=device, threshold=cfg.eval.mask_threshold)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """DataFrame[video, text] → DataFrame[video, text, frame, score, mask] (see module)."""
        from refsam.data.rle import encode_mask

        missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(
                f"model input lacks column(s) {missing}; expected {list(INPUT_COLUMNS)}"
            )
        rows: list[dict[str, Any]] = []
        for video, group in model_input.groupby("video", sort=False):
            texts = [str(t) for t in group["text"]]
            for prediction in self.predictor.track(Path(str(video)), texts):
                for index, text in enumerate(texts):
                    rle = encode_mask(prediction.masks[index])
                    rows.append(
                        {
                            "video": str(video),
                            "text": text,
                            "frame": int(prediction.index),
                            "score": float(prediction.scores[index]),
                            "mask": json.dumps(rle),
                        }
                    )
        return pd.DataFrame(rows, columns=["video", "text", "frame", "score", "mask"])


def _refsam_requirement() -> list[str]:
    try:
        return [f"refsam=={metadata.version('refsam')}"]
    except metadata.PackageNotFoundError:
        return ["refsam"]


@contextlib.contextmanager
def _quiet_save() -> Iterator[None]:
    """No artifact progress bars, no "input example" nag (an example cannot run without a
    built model) while saving."""
    previous = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            yield
    finally:
        if previous is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = previous


def save_pyfunc_model(
    out: Path,
    checkpoint: Path,
    config_yaml: Path,
    *,
    device: str = "auto",
    metadata: Model | None = None,
) -> Path:
    """Write the pyfunc model folder ``out`` (must not exist) around ``checkpoint``.

    The python model is given as code (:mod:`refsam.tracking.pyfunc_code`, MLflow's
    "models from code"), so loading a registered model unpickles nothing. ``metadata``
    is the ``MLmodel`` record to fill (a logged model's id, run and location).
    """
    with _quiet_save():
        mlflow.pyfunc.save_model(
            str(out),
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),
            artifacts={CHECKPOINT_KEY: str(checkpoint), CONFIG_KEY: str(config_yaml)},
            signature=SIGNATURE,
            pip_requirements=_refsam_requirement(),
            model_config={"device": device},
            mlflow_model=metadata,
        )
    return out
