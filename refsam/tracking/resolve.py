"""Resolve a model reference to a local checkpoint file (``refsam predict --model ...``).

Accepted: ``models:/<name>@<alias>`` (e.g. ``models:/refsam@champion``),
``models:/<name>/<version>``, ``models:/<name>/latest``, ``runs:/<run id>/<path>`` and a
plain file path. With a local artifact store the returned path points into it (no
copy); remote artifacts are downloaded to a temporary folder (``refsam-model-*``) that is
removed when the process exits (:func:`download_dir`). Only reads: a sqlite store that does
not exist is a :class:`UserError`, never created.

A version registered from an MLflow 3 logged model (``models:/<model id>``) holds its
checkpoint in the logged model's artifacts; an older one in its run's artifacts.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from refsam.config import TrackingConfig
from refsam.errors import UserError
from refsam.tracking.registry import TAG_CHECKPOINT
from refsam.tracking.store import read_client


def download_dir() -> Path:
    """A new temporary folder for a remote model's files, removed when the process exits
    (a CLI call or a flow run resolves a model once; nothing piles up in the temp dir)."""
    folder = Path(tempfile.mkdtemp(prefix="refsam-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _download_from(client: MlflowClient, root: str, path: str, what: str) -> Path:
    """Download ``path`` under artifact root ``root``. The repository gets the client's
    tracking URI: a server's proxied root (``mlflow-artifacts:/…``) is resolved against
    it, not against the process-wide default (which ``tracking.uri`` does not set)."""
    try:
        repository = get_artifact_repository(root, tracking_uri=client.tracking_uri)
        if isinstance(repository, LocalArtifactRepository):
            local = repository.download_artifacts(path)  # the store's own file, no copy
        else:
            local = repository.download_artifacts(path, dst_path=str(download_dir()))
    except (MlflowException, OSError) as exc:
        raise UserError(f"{what}: artifact {path!r} not found ({exc})") from None
    local_path = Path(local)
    if not local_path.exists():
        raise UserError(f"{what}: artifact {path!r} not found under {root}")
    return local_path


def _logged_model_id(source: str | None) -> str | None:
    """``m-…`` of a ``models:/m-…`` version source (a logged model), else None."""
    rest = (source or "").removeprefix("models:/")
    return rest if rest != source and rest.startswith("m-") and "/" not in rest else None


def _model_download(client: MlflowClient, model_id: str, path: str) -> Path:
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        raise UserError(f"logged model {model_id!r} not found in {client.tracking_uri}") from None
    return _download_from(client, model.artifact_location, path, f"logged model {model_id}")


def _download(client: MlflowClient, run_id: str, path: str) -> Path:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"MLflow run {run_id!r} not found in {client.tracking_uri}") from None
    return _download_from(client, run.info.artifact_uri, path, f"run {run_id}")


def _model_version(client: MlflowClient, spec: str) -> ModelVersion:
    name, at, alias = spec.partition("@")
    if not at:
        name, _, alias = spec.rpartition("/")
    if not name or not alias:
        raise UserError(
            f"models:/{spec}: expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise UserError(
            f"no registered model {name!r} in {client.tracking_uri}; known: {', '.join(known) or 'none'}"
        ) from None
    if at:
        if alias not in model.aliases:
            have = ", ".join(f"{a}→v{v}" for a, v in sorted(model.aliases.items())) or "none"
            raise UserError(f"registered model {name!r} has no alias {alias!r} (aliases: {have})")
        return client.get_model_version(name, str(model.aliases[alias]))
    if alias == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise UserError(f"registered model {name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return client.get_model_version(name, alias)
    except MlflowException:
        raise UserError(f"registered model {name!r} has no version {alias!r}") from None


def resolve_model_uri(
    uri: str, *, tracking: TrackingConfig | None = None, project_root: Path | None = None
) -> Path:
    """The local checkpoint file that ``uri`` names (see module doc); :class:`UserError`
    for an unknown model, alias, version, run or path."""
    if uri.startswith("models:/") or uri.startswith("runs:/"):
        client = read_client(tracking or TrackingConfig(), project_root)
        if uri.startswith("runs:/"):
            run_id, _, path = uri[len("runs:/") :].partition("/")
            if not run_id or not path:
                raise UserError(f"{uri}: expected runs:/<run id>/<artifact path>")
            return _download(client, run_id, path)
        version = _model_version(client, uri[len("models:/") :])
        checkpoint = version.tags.get(TAG_CHECKPOINT)
        if not checkpoint or not (version.model_id or version.run_id):
            raise UserError(
                f"{uri}: version {version.version} was not registered by refsam (no checkpoint tag)"
            )
        model_id = version.model_id or _logged_model_id(version.source)
        if model_id:
            return _model_download(client, model_id, checkpoint)
        return _download(client, version.run_id, checkpoint)
    path = Path(uri).expanduser()
    if not path.is_file():
        raise UserError(f"{uri}: no such checkpoint file (nor a models:/ or runs:/ URI)")
    return path.resolve()
