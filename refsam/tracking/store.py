"""Where MLflow data lives: tracking URI, artifact roots, clients and experiments.

Default store (ARCHITECTURE.md): ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts
under ``<project>/mlruns/artifacts/<experiment>/``. ``TrackingConfig.uri`` wins over the
``MLFLOW_TRACKING_URI`` environment variable, which wins over the default. For any sqlite
store the artifacts go next to the database (``<db dir>/artifacts``); a tracking server
(``http(s)://``) chooses its own artifact root (e.g. an S3 bucket it proxies, so clients
need no storage credentials), and is checked to answer before its first use
(:func:`check_server`).

Everything here takes explicit URIs and returns :class:`mlflow.MlflowClient` objects:
MLflow's fluent "active run" is thread-local and Prefect runs tasks in other threads.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from refsam.config import RefSAMConfig, TrackingConfig
from refsam.errors import UserError
from refsam.paths import project_root as default_project_root

log = logging.getLogger(__name__)

DEFAULT_DB = Path("mlruns/mlflow.db")
ARTIFACTS_DIR = "artifacts"
_SQLITE = "sqlite:///"
# The MLflow UI opens an experiment of this kind on its runs (model training), not on the
# GenAI views ("custom_model_development" is MLflow 3's value for classic ML training).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A tracking server that does not answer: a few short tries (seconds), not MLflow's own
# request retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, minutes), which are for a server
# that was there and blinked.
SERVER_SCHEMES = ("http", "https")
PROBE_TRIES = 3
PROBE_TIMEOUT_S = 5.0
PROBE_PAUSE_S = 1.0


def tracking_uri(cfg: TrackingConfig | None = None, project_root: Path | None = None) -> str:
    """The tracking URI: ``cfg.uri`` > ``$MLFLOW_TRACKING_URI`` > the project's sqlite store.

    A relative sqlite path (``sqlite:///mlruns/x.db``) is made absolute against the project
    root, so the store does not depend on the current directory.
    """
    root = Path(project_root) if project_root is not None else default_project_root()
    uri = (cfg.uri if cfg is not None else None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return _SQLITE + str((root / DEFAULT_DB).resolve())
    if uri.startswith(_SQLITE):
        path = uri[len(_SQLITE) :]
        if path and not path.startswith("/") and path != ":memory:":
            return _SQLITE + str((root / path).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith(_SQLITE) and uri[len(_SQLITE) :] not in ("", ":memory:"):
        return Path(uri[len(_SQLITE) :])
    return None


def artifact_root(uri: str) -> Path | None:
    """Local artifact root for a sqlite store (``<db dir>/artifacts``); None for servers."""
    db = sqlite_path(uri)
    return db.parent / ARTIFACTS_DIR if db is not None else None


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (``http(s)://…``), not a local store."""
    return urlsplit(uri).scheme in SERVER_SCHEMES


def check_server(uri: str, *, tries: int = PROBE_TRIES, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A :class:`UserError` naming ``uri`` when nothing answers HTTP there (refused, no
    such host, timeout), after ``tries`` short tries. Any HTTP answer counts, even 401 or
    404, and so does a TLS handshake error: authentication, paths and certificates are
    for MLflow's own settings to handle."""
    url = uri.rstrip("/") + "/health"  # MLflow's unauthenticated liveness route
    why: object = None
    for attempt in range(tries):
        if attempt:
            time.sleep(PROBE_PAUSE_S * attempt)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                return
        except urllib.error.HTTPError:
            return
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                return
            why = exc.reason
        except (OSError, http.client.HTTPException) as exc:
            why = exc
    raise UserError(
        f"no MLflow tracking server answers at {uri} ({why}): start it (mlflow server …) or "
        "point tracking.uri / MLFLOW_TRACKING_URI at a running one"
    )


@functools.lru_cache(maxsize=16)
def _client(uri: str) -> MlflowClient:
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if is_server(uri):
        check_server(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def get_client(cfg: TrackingConfig | None = None, project_root: Path | None = None) -> MlflowClient:
    """A client bound to :func:`tracking_uri` for both tracking and the model registry."""
    return _client(tracking_uri(cfg, project_root))


def client_for_uri(uri: str) -> MlflowClient:
    """A (cached) client bound to ``uri`` for tracking and registry."""
    return _client(uri)


def missing_store(uri: str) -> Path | None:
    """The database file of a sqlite ``uri`` that does not exist yet, else None."""
    db = sqlite_path(uri)
    return db if db is not None and not db.is_file() else None


def no_store_error(db: Path) -> UserError:
    """The one-line error of a read from a sqlite store that does not exist."""
    return UserError(
        f"no MLflow store at {db}: nothing has been tracked there yet; run from the project "
        "directory, or set REFSAM_HOME (the project root) or MLFLOW_TRACKING_URI to the store"
    )


def read_client(
    cfg: TrackingConfig | None = None, project_root: Path | None = None
) -> MlflowClient:
    """A client for READING the store of :func:`tracking_uri`: a sqlite store that does not
    exist is a :class:`UserError` (MLflow would silently create an empty one, and its
    folder, in the current directory)."""
    uri = tracking_uri(cfg, project_root)
    db = missing_store(uri)
    if db is not None:
        raise no_store_error(db)
    return _client(uri)


def experiment_name(cfg: RefSAMConfig) -> str:
    """One experiment per config family: ``tracking.experiment`` or the config's name."""
    return cfg.tracking.experiment or cfg.name


def _safe_dir_name(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "experiment"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (with an explicit artifact location) if needed.

    A deleted experiment of that name is restored. Safe against a concurrent creator. The
    experiment is tagged ``mlflow.experimentKind = custom_model_development`` (an existing
    one without that tag gets it), so the MLflow UI treats it as model training.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            log.info("restoring deleted MLflow experiment %r", name)
            client.restore_experiment(existing.experiment_id)
        if EXPERIMENT_KIND_TAG not in existing.tags:  # made before refsam set the kind
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return existing.experiment_id
    root = artifact_root(client.tracking_uri)
    location = (root / _safe_dir_name(name)).as_uri() if root is not None else None
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except MlflowException as exc:
        again = client.get_experiment_by_name(name)
        if again is None:
            raise UserError(
                f"cannot create MLflow experiment {name!r} in {client.tracking_uri}: {exc}"
            ) from None
        return again.experiment_id


def get_experiment_id(client: MlflowClient, name: str) -> str:
    """The id of an existing experiment, or a :class:`UserError` listing the known ones."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments())
        raise UserError(
            f"no MLflow experiment {name!r} in {client.tracking_uri}; "
            f"known: {', '.join(known) or 'none'}"
        )
    return experiment.experiment_id
