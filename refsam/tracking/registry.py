"""Model registry: register checkpoints, find and move the ``champion`` alias.

A model version is a pyfunc model (:mod:`refsam.tracking.pyfunc`) logged under the
training run's ``model/`` artifact folder. Its tags record what it scored
(``metric.<key>``, ``selection.metric``, ``selection.value``), on which eval data
(``eval.manifest_hash``), where its checkpoint file is (``checkpoint.artifact``), and the
last promotion decision (``decision.*``). The champion moves only on a strict
improvement of the selection metric on the same eval data (ARCHITECTURE.md, ``retrain``).
"""

from __future__ import annotations

import logging
import math
import numbers
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from refsam.config import RefSAMConfig, TrackingConfig
from refsam.errors import UserError
from refsam.fsio import file_sha256
from refsam.tracking.provenance import metric_key
from refsam.tracking.pyfunc import save_pyfunc_model
from refsam.tracking.store import get_client

log = logging.getLogger(__name__)

TAG_SELECTION_METRIC = "selection.metric"
TAG_SELECTION_VALUE = "selection.value"
TAG_MANIFEST = "eval.manifest_hash"
TAG_CHECKPOINT = "checkpoint.artifact"


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


def _free_artifact_path(client: MlflowClient, run_id: str, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``… so a second registration from the same run
    never overwrites the files an earlier version points to."""
    taken = {a.path for a in client.list_artifacts(run_id)}
    candidate, index = wanted, 1
    while candidate in taken:
        index += 1
        candidate = f"{wanted}-{index}"
    return candidate


def register_checkpoint(
    run_id: str,
    checkpoint_path: Path,
    cfg: RefSAMConfig,
    metrics: dict[str, float],
    *,
    manifest_hash: str | None = None,
    artifact_path: str = "model",
    device: str = "auto",
    project_root: Path | None = None,
) -> str:
    """Log ``checkpoint_path`` as a pyfunc model under run ``run_id`` and register it as a
    new version of ``cfg.tracking.registered_model``; returns the version (e.g. ``"3"``).

    The model goes to the run's ``artifact_path`` folder (``model-2``… if taken).
    ``metrics`` are the evaluation metrics (e.g. ``{"ref-davis17/valid/J&F": 0.61}``);
    the value of ``cfg.eval.selection`` among them and ``manifest_hash`` (of that eval
    data) are what :func:`promote_if_better` compares.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise UserError(f"{checkpoint_path}: checkpoint file not found; cannot register it")
    client = _client(cfg.tracking, project_root)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"MLflow run {run_id!r} not found in {client.tracking_uri}") from None
    artifact_path = _free_artifact_path(client, run_id, artifact_path)
    with tempfile.TemporaryDirectory(prefix="refsam-model-") as tmp:
        config_yaml = Path(tmp) / "config.yaml"
        config_yaml.write_text(cfg.to_yaml(), encoding="utf-8")
        model_dir = save_pyfunc_model(
            Path(tmp) / "model", checkpoint_path, config_yaml, device=device
        )
        client.log_artifacts(run_id, str(model_dir), artifact_path)
    name = cfg.tracking.registered_model
    try:
        client.create_registered_model(name, description="RefSAM referring video segmentation")
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
    tags = {metric_key(f"metric.{k}"): str(v) for k, v in numeric.items()}
    tags.update(
        {
            TAG_SELECTION_METRIC: cfg.eval.selection,
            TAG_CHECKPOINT: f"{artifact_path}/artifacts/{checkpoint_path.name}",
            "checkpoint.sha256": file_sha256(checkpoint_path),
            "refsam.config_hash": cfg.config_hash(),
        }
    )
    value = _selection_value(numeric, cfg.eval.selection)
    if value is not None:
        tags[TAG_SELECTION_VALUE] = repr(value)
    if manifest_hash is not None:
        tags[TAG_MANIFEST] = manifest_hash
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
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
    ``tracking.registered_model``), or None when the model or the alias does not exist."""
    tracking = tracking or TrackingConfig()
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
