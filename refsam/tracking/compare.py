"""Side-by-side comparison of recent training runs (``refsam runs compare``).

Reads only what training and evaluation log: params ``model.variant``,
``model.text_encoder``, ``train.lr``, ``train.stages.<i>.frames_per_clip``, the trainable
parameter count (param ``trainable_params`` from the trainer, else the sum of its
``trainable/<group>`` or, in older runs, of ``trainable_params.<group>``),
tags ``data.<set>`` (manifest hashes) and metrics ``eval/<dataset>/<split>/{J,F,J_and_F}``
(and per expression subset, ``…/J_and_F/<subset>``);
and, from the registry, which run's model version holds the champion alias.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from refsam.config import TrackingConfig
from refsam.tracking.runs import EVAL_PREFIX, KIND_TAG
from refsam.tracking.store import (
    client_for_uri,
    get_experiment_id,
    missing_store,
    no_store_error,
    tracking_uri,
)

EVAL_METRICS = {"J": "J", "F": "F", "J_and_F": "J&F"}
DEFAULT_TEXT_ENCODER = "MiniLM (packaged)"
_STAGE_FRAMES = re.compile(r"^train\.stages\.(\d+)\.frames_per_clip$")


def _trainable(params: dict[str, str]) -> int | None:
    """The total (the trainer logs ``trainable_params``), else the sum of one family of
    per-group counts: the trainer's ``trainable/<group>`` or ``trainable_params.<group>``
    (runs of older versions, whose train flow logged both families: never added together)."""
    for key in ("trainable_params", "trainable_params.total", "trainable/total"):
        if key in params:
            return int(float(params[key]))
    for prefix in ("trainable_params.", "trainable/"):
        groups = [float(v) for k, v in params.items() if k.startswith(prefix)]
        if groups:
            return int(sum(groups))
    return None


def _frames(params: dict[str, str]) -> str:
    stages = sorted(
        (int(m.group(1)), v) for k, v in params.items() if (m := _STAGE_FRAMES.match(k))
    )
    return "→".join(v for _, v in stages) or "-"


def _champion(client: MlflowClient, tracking: TrackingConfig) -> tuple[str, str] | None:
    """(run id, version) of the registered model version holding the champion alias."""
    try:
        model = client.get_registered_model(tracking.registered_model)
        version = model.aliases.get(tracking.champion_alias)
        if version is None:
            return None
        return client.get_model_version(model.name, str(version)).run_id, str(version)
    except MlflowException:
        return None


def _row(run: Run, experiment: str) -> dict[str, Any]:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    encoder = params.get("model.text_encoder", "None")
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiment,
        "status": run.info.status,
        "started": datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime(
            "%Y-%m-%d %H:%M"
        ),
        "variant": params.get("model.variant", "-"),
        "dense_path": params.get("model.dense_path", "-"),
        "tracking": params.get("model.tracking", "-"),
        "adapters": params.get("model.adapters", "-"),
        "temporal": params.get("model.temporal", "none" if "model.variant" in params else "-"),
        "seed": params.get("train.seed", "-"),
        "text_encoder": DEFAULT_TEXT_ENCODER if encoder in ("None", "") else encoder,
        "trainable_params": _trainable(params),
        "lr": float(params["train.lr"]) if "train.lr" in params else None,
        "frames_per_clip": _frames(params),
        "data": {
            k.removeprefix("data."): v for k, v in sorted(tags.items()) if k.startswith("data.")
        },
        "git_commit": tags.get("git.commit", "unknown")[:10],
        "eval": {},
    }
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if len(parts) in (4, 5) and parts[0] == EVAL_PREFIX and parts[3] in EVAL_METRICS:
            metric = "/".join([EVAL_METRICS[parts[3]], *parts[4:]])  # J&F or J&F/<subset>
            row["eval"].setdefault(f"{parts[1]}/{parts[2]}", {})[metric] = value
    return row


def compare_runs(
    experiment: str | None = None,
    last: int = 10,
    *,
    tracking: TrackingConfig | None = None,
    project_root: Path | None = None,
) -> list[dict[str, Any]]:
    """The ``last`` most recent training runs (newest first) of ``experiment`` (default:
    all experiments), one dict per run: run_id, run_name, experiment, status, started,
    variant, dense_path, tracking, adapters (the ablation switches), text_encoder,
    trainable_params, lr, frames_per_clip, data ({set: manifest
    hash}), git_commit, eval ({"<dataset>/<split>": {"J", "F", "J&F"}}), champion (the
    version of ``tracking.registered_model`` holding ``tracking.champion_alias`` when
    this run registered it, else None). Only reads: a missing sqlite store is not created
    (no runs; a :class:`UserError` when ``experiment`` is named)."""
    if last <= 0:
        raise ValueError(f"last must be positive, got {last}")
    tracking = tracking or TrackingConfig()
    uri = tracking_uri(tracking, project_root)
    db = missing_store(uri)
    if db is not None:
        if experiment is not None:
            raise no_store_error(db)
        return []
    client = client_for_uri(uri)
    if experiment is not None:
        names = {get_experiment_id(client, experiment): experiment}
    else:
        names = {e.experiment_id: e.name for e in client.search_experiments()}
    if not names:
        return []
    runs = client.search_runs(
        list(names),
        filter_string=f"tags.`{KIND_TAG}` = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=last,
    )
    rows = [_row(run, names[run.info.experiment_id]) for run in runs]
    champion = _champion(client, tracking)
    for row in rows:
        row["champion"] = champion[1] if champion and champion[0] == row["run_id"] else None
    return rows
