"""Side-by-side comparison of recent training runs (``refsam runs compare``).

Reads only what training and evaluation log: params ``model.variant``,
``model.text_encoder``, ``train.lr``, ``train.stages.<i>.frames_per_clip``, the trainable
parameter count (param ``trainable_params`` from the train flow, else the sum of
``trainable_params.<group>`` or of the trainer's ``trainable/<group>``),
tags ``data.<set>`` (manifest hashes) and metrics ``eval/<dataset>/<split>/{J,F,J_and_F}``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from refsam.config import TrackingConfig
from refsam.errors import UserError
from refsam.tracking.runs import EVAL_PREFIX, KIND_TAG
from refsam.tracking.store import client_for_uri, get_experiment_id, sqlite_path, tracking_uri

EVAL_METRICS = {"J": "J", "F": "F", "J_and_F": "J&F"}
DEFAULT_TEXT_ENCODER = "MiniLM (packaged)"
_STAGE_FRAMES = re.compile(r"^train\.stages\.(\d+)\.frames_per_clip$")


def _trainable(params: dict[str, str]) -> int | None:
    """The total (flows log ``trainable_params``), else the sum of one family of per-group
    counts: ``trainable_params.<group>`` or the trainer's ``trainable/<group>``. A run can
    hold both families (the train flow logs the first, the trainer the second), so they
    are never added together."""
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
        if len(parts) == 4 and parts[0] == EVAL_PREFIX and parts[3] in EVAL_METRICS:
            row["eval"].setdefault(f"{parts[1]}/{parts[2]}", {})[EVAL_METRICS[parts[3]]] = value
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
    hash}), git_commit, eval ({"<dataset>/<split>": {"J", "F", "J&F"}})."""
    if last <= 0:
        raise ValueError(f"last must be positive, got {last}")
    uri = tracking_uri(tracking or TrackingConfig(), project_root)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        if experiment is not None:
            raise UserError(f"no MLflow store at {db}: nothing has been tracked there yet")
        return []  # do not create an empty store just to report that it is empty
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
    return [_row(run, names[run.info.experiment_id]) for run in runs]
