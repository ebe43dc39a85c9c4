"""Model registry: register checkpoints, find and move the ``champion`` alias.

A model version is an MLflow 3 logged model (a pyfunc model, :mod:`refsam.tracking.pyfunc`)
that the training run outputs: the run page lists it under "Logged models", and the
version links to it (``models:/<model id>``) and to the run. Its tags record the
selection metric and its value (``selection.metric``, ``selection.value``; every other
number lives on the run), on which eval data (``eval.manifest_hash``), where its
checkpoint file is inside the model (``checkpoint.artifact``), the config hash (the same
as the run's and the checkpoint's), and the last promotion decision (``decision.*``). The champion moves only on a strict
improvement of the selection metric on the same eval data (ARCHITECTURE.md, ``retrain``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from refsam.config import RefSAMConfig, TrackingConfig
from refsam.errors import UserError
from refsam.fsio import file_sha256
from refsam.tracking.provenance import metric_key
from refsam.tracking.pyfunc import save_pyfunc_model
from refsam.tracking.runs import EVAL_PREFIX
from refsam.tracking.store import get_client, missing_store, tracking_uri

log = logging.getLogger(__name__)

TAG_SELECTION_METRIC = "selection.metric"
TAG_SELECTION_VALUE = "selection.value"
TAG_MANIFEST = "eval.manifest_hash"
TAG_CHECKPOINT = "checkpoint.artifact"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ARTIFACTS = "artifacts"  # the pyfunc model's folder of files (checkpoint, config.yaml)


class Champion(NamedTuple):
    """The version holding the champion alias, its selection metric value and the
    manifest hash of the eval data that value was measured on (None if not recorded)."""

    version: str
    value: float | None
    manifest_hash: str | None


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`promote_if_better` (also stored as ``decision.*`` version tags)."""

    promoted: bool
    version: str
    value: float
    champion_version: str | None
    champion_value: float | None
    reason: str


class ChampionMismatchError(UserError):
    """The champion's score was measured on other eval data (or is missing)."""


_LOOKUP: Any = object()


def _client(tracking: TrackingConfig | None, project_root: Path | None) -> MlflowClient:
    return get_client(tracking or TrackingConfig(), project_root)


def _selection_value(metrics: dict[str, float], selection: str) -> float | None:
    for key in (selection, metric_key(selection)):
        if key in metrics:
            return float(metrics[key])
    return None


def _eval_metrics_at(client: MlflowClient, run_id: str, step: int | None) -> list[Metric]:
    """The run's ``eval/*`` metric values at ``step`` (its latest if None), as they were
    logged (same timestamp), to be attached to a logged model too."""
    run = client.get_run(run_id)
    found = []
    for key in run.data.metrics:
        if not key.startswith(f"{EVAL_PREFIX}/"):
            continue
        history = client.get_metric_history(run_id, key)
        chosen = [m for m in history if step is None or m.step == step]
        if chosen:
            found.append(max(chosen, key=lambda m: (m.step, m.timestamp)))
    return found


def _log_model(
    client: MlflowClient,
    run_id: str,
    checkpoint_path: Path,
    cfg: RefSAMConfig,
    *,
    name: str,
    device: str,
    step: int | None,
) -> LoggedModel:
    """An MLflow 3 logged model (pyfunc around the checkpoint), output of run ``run_id``
    (the run page lists it under "Logged models"), with the run's eval metrics."""
    run = client.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params={"config_hash": cfg.config_hash(), "model.variant": cfg.model.variant},
        tags={TAG_CHECKPOINT: f"{ARTIFACTS}/{checkpoint_path.name}"},
        model_type="refsam",
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step or 0)])
        metrics = _eval_metrics_at(client, run_id, step)
        if metrics:
            client.log_batch(
                run_id,
                metrics=[
                    Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id)
                    for m in metrics
                ],
            )
        with tempfile.TemporaryDirectory(prefix="refsam-model-") as tmp:
            config_yaml = Path(tmp) / "config.yaml"
            config_yaml.write_text(cfg.to_yaml(), encoding="utf-8")
            metadata = Model(
                artifact_path=model.artifact_location,
                model_uuid=model.model_id,
                run_id=run_id,
                model_id=model.model_id,
            )
            model_dir = save_pyfunc_model(
                Path(tmp) / "model", checkpoint_path, config_yaml, device=device, metadata=metadata
            )
            client.log_model_artifacts(model.model_id, str(model_dir))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


_DEFAULT_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _default_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's registry resolves a ``models:/<model id>`` version source through the
    process-wide default tracking URI, not the client's: point it at ``uri`` meanwhile
    (``$MLFLOW_TRACKING_URI``, which MLflow rewrites, is restored as it was)."""
    saved = os.environ.get(TRACKING_URI_ENV)
    with _DEFAULT_URI_LOCK:
        try:
            with _use_tracking_uri(uri):
                yield
        finally:
            if saved is None:
                os.environ.pop(TRACKING_URI_ENV, None)
            else:
                os.environ[TRACKING_URI_ENV] = saved


def register_checkpoint(
    run_id: str,
    checkpoint_path: Path,
    cfg: RefSAMConfig,
    metrics: dict[str, float],
    *,
    manifest_hash: str | None = None,
    artifact_path: str = "model",
    device: str = "auto",
    step: int | None = None,
    project_root: Path | None = None,
) -> str:
    """Log ``checkpoint_path`` as an MLflow logged model (pyfunc, named ``artifact_path``)
    of run ``run_id`` and register it as a new version of ``cfg.tracking.registered_model``;
    returns the version (e.g. ``"3"``).

    ``metrics`` are the evaluation metrics (e.g. ``{"ref-davis17/valid/J&F": 0.61}``);
    the value of ``cfg.eval.selection`` among them and ``manifest_hash`` (of that eval
    data) are what :func:`promote_if_better` compares. The numbers themselves live on the
    run (and on the logged model: the run's ``eval/*`` metrics at ``step``, default their
    latest), not as version tags.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise UserError(f"{checkpoint_path}: checkpoint file not found; cannot register it")
    client = _client(cfg.tracking, project_root)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"MLflow run {run_id!r} not found in {client.tracking_uri}") from None
    model = _log_model(
        client, run_id, checkpoint_path, cfg, name=artifact_path, device=device, step=step
    )
    name = cfg.tracking.registered_model
    try:
        client.create_registered_model(name, description="RefSAM referring video segmentation")
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
    tags = {
        TAG_SELECTION_METRIC: cfg.eval.selection,
        TAG_CHECKPOINT: f"{ARTIFACTS}/{checkpoint_path.name}",
        "checkpoint.sha256": file_sha256(checkpoint_path),
        "refsam.config_hash": cfg.config_hash(),
    }
    value = _selection_value(numeric, cfg.eval.selection)
    if value is not None:
        tags[TAG_SELECTION_VALUE] = repr(value)
    if manifest_hash is not None:
        tags[TAG_MANIFEST] = manifest_hash
    with _default_tracking_uri(client.tracking_uri):
        version = client.create_model_version(
            name,
            source=f"models:/{model.model_id}",
            run_id=run_id,
            tags=tags,
            model_id=model.model_id,
        )
    client.set_logged_model_tags(  # the logged model's page links back to the version
        model.model_id,
        {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name, "version": str(version.version)}])},
    )
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return str(version.version)


def get_champion(
    name: str | None = None,
    *,
    tracking: TrackingConfig | None = None,
    project_root: Path | None = None,
) -> Champion | None:
    """The current champion of registered model ``name`` (default
    ``tracking.registered_model``), or None when the store, the model or the alias does
    not exist (a missing sqlite store is not created by asking)."""
    tracking = tracking or TrackingConfig()
    if missing_store(tracking_uri(tracking, project_root)) is not None:
        return None
    client = _client(tracking, project_root)
    name = name or tracking.registered_model
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return None
    version = model.aliases.get(tracking.champion_alias)
    if version is None:
        return None
    tags = client.get_model_version(name, str(version)).tags
    value = tags.get(TAG_SELECTION_VALUE)
    return Champion(
        str(version), float(value) if value is not None else None, tags.get(TAG_MANIFEST)
    )


def _set_version_tags(client: MlflowClient, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, "" if value is None else str(value))


def _compare(
    version: str, value: float, manifest_hash: str | None, current: Champion | None
) -> tuple[bool, str]:
    if math.isnan(value):
        return False, f"candidate v{version} has no valid selection value (NaN)"
    if current is None:
        return True, f"no champion yet: v{version} ({value:.6g}) takes it"
    if current.version == version:
        return False, f"v{version} is already the champion"
    if current.value is None or current.manifest_hash != manifest_hash:
        raise ChampionMismatchError(
            f"champion v{current.version} was scored on eval data {current.manifest_hash!r} "
            f"(value {current.value}), the candidate on {manifest_hash!r}: re-score the champion "
            "on the candidate's eval data and pass it as current=Champion(...)"
        )
    if value > current.value:
        return True, f"v{version} {value:.6g} > champion v{current.version} {current.value:.6g}"
    if value == current.value:
        return False, f"tie with champion v{current.version} at {value:.6g}: champion kept"
    return (
        False,
        f"v{version} {value:.6g} < champion v{current.version} {current.value:.6g}: champion kept",
    )


def promote_if_better(
    name: str | None,
    version: str,
    value: float,
    manifest_hash: str | None,
    *,
    current: Champion | None = _LOOKUP,
    tracking: TrackingConfig | None = None,
    project_root: Path | None = None,
) -> Decision:
    """Move the champion alias to ``version`` only if ``value`` strictly beats the champion.

    ``current`` defaults to :func:`get_champion`; pass a re-scored ``Champion`` when the
    eval data changed (its stored value and manifest hash are then updated), or None to
    mean "no champion". A tie keeps the champion; no champion → ``version`` takes it.
    Raises :class:`ChampionMismatchError` if the champion's score is on other eval data.
    The decision is recorded as ``decision.*`` tags on ``version``.
    """
    tracking = tracking or TrackingConfig()
    client = _client(tracking, project_root)
    name = name or tracking.registered_model
    version, value = str(version), float(value)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise UserError(
            f"registered model {name!r} has no version {version!r} in {client.tracking_uri}"
        ) from None
    stored = get_champion(name, tracking=tracking, project_root=project_root)
    if current is _LOOKUP:
        current = stored
    elif (
        current is not None
        and current != stored
        and current.version == (stored.version if stored else None)
    ):
        _set_version_tags(
            client,
            name,
            current.version,
            {TAG_SELECTION_VALUE: current.value, TAG_MANIFEST: current.manifest_hash},
        )
    promoted, reason = _compare(version, value, manifest_hash, current)
    if promoted:
        client.set_registered_model_alias(name, tracking.champion_alias, version)
    decision = Decision(
        promoted=promoted,
        version=version,
        value=value,
        champion_version=current.version if current else None,
        champion_value=current.value if current else None,
        reason=reason,
    )
    candidate_tags: dict[str, Any] = {
        "decision.promoted": str(promoted).lower(),
        "decision.reason": reason,
        "decision.value": value,
        "decision.champion_version": decision.champion_version,
        "decision.champion_value": decision.champion_value,
        "decision.time": datetime.now(UTC).isoformat(timespec="seconds"),
        TAG_SELECTION_VALUE: repr(value),
    }
    if manifest_hash is not None:
        candidate_tags[TAG_MANIFEST] = manifest_hash
    _set_version_tags(client, name, version, candidate_tags)
    log.info("%s: %s", name, reason)
    return decision
