"""MLflow runs for training and evaluation, logged through explicit run ids.

Layout: one experiment per config family (:func:`~refsam.tracking.store.experiment_name`).
A **training** run covers all of its stages as consecutive step ranges of one global step
(stage ``k`` starts where stage ``k-1`` ended; the ``train.stages.*`` params give the
boundaries), so a resume simply continues the same run and its metric curves. An
**evaluation** run is one per (checkpoint, dataset, split), nested under the training
run when it is known (``mlflow.parentRunId``); its headline metrics are also copied into
the training run as ``eval/<dataset>/<split>/<metric>`` at the training step, which is
what the J&F-vs-step plot and ``refsam runs compare`` read. Metric keys are made valid
for MLflow by :func:`~refsam.tracking.provenance.metric_key` (``J&F`` → ``J_and_F``).

Nothing here uses MLflow's fluent active run (thread-local): every call names its run
id, so a logger can be used from Prefect task threads.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from refsam.config import RefSAMConfig
from refsam.errors import UserError
from refsam.paths import project_root as default_project_root
from refsam.tracking.provenance import config_params, flatten_params, metric_key, run_tags
from refsam.tracking.store import client_for_uri, ensure_experiment, experiment_name, tracking_uri

log = logging.getLogger(__name__)

KIND_TAG = "refsam.kind"
EVAL_PREFIX = "eval"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


class MlflowRunLogger:
    """The :class:`RunLogger` protocol on one MLflow run, by explicit run id (thread-safe).

    Use as a context manager to end the run (``FAILED`` if the block raised).
    """

    def __init__(self, run_id: str, *, tracking_uri: str) -> None:
        self.run_id: str | None = run_id
        self.tracking_uri = tracking_uri
        self.client = client_for_uri(tracking_uri)
        self._monitor: Any = None
        self._logged_until: dict[str, int] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params with dotted keys. Params already logged with the same value
        are skipped; a changed value (e.g. a resume with another config) cannot overwrite
        the original in MLflow, so it is kept as tag ``param_changed.<key>``."""
        flat = flatten_params(params)
        existing = self.client.get_run(self._id).data.params
        changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            log.warning(
                "run %s: params changed since the run started: %s", self._id, ", ".join(changed)
            )
            self.set_tags({f"param_changed.{k}": v for k, v in changed.items()})
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._id, params=new[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step`` (keys made valid: ``J&F`` → ``J_and_F``).

        On a resumed run (:meth:`skip_logged_steps`) a metric is not logged again at a step
        it already has: the steps a resumed training repeats keep their first value."""
        now, step = int(time.time() * 1000), int(step)
        batch = [
            Metric(key, float(v), now, step)
            for key, v in ((metric_key(k), v) for k, v in metrics.items())
            if key not in self._logged_until or step > self._logged_until[key]
        ]
        for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under ``artifact_path``."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self._id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self._id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"{path}: cannot log it to MLflow run {self._id}: no such file")

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as the artifact ``artifact_file`` (e.g. ``config.yaml``)."""
        self.client.log_text(self._id, text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as text; keys made valid like metric keys)."""
        for key, value in tags.items():
            self.client.set_tag(self._id, metric_key(key), str(value))

    def skip_logged_steps(self) -> None:
        """Remember the last step each metric of the run reached (``system/*`` aside), so
        that a resumed training, which repeats the steps after its last checkpoint, does
        not log those steps twice (a killed run may have logged beyond its checkpoint)."""
        for key in self.client.get_run(self._id).data.metrics:
            if not key.startswith("system/"):
                steps = [m.step for m in self.client.get_metric_history(self._id, key)]
                if steps:
                    self._logged_until[key] = max(steps)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of metric ``key`` (raw or unsanitised name), by step."""
        history = self.client.get_metric_history(self._id, metric_key(key))
        return sorted((m.step, m.value) for m in history)

    def start_system_metrics(self, interval_s: float = 10.0, *, resume: bool = False) -> bool:
        """Sample CPU/memory/disk/network (and GPU with pynvml) every ``interval_s`` seconds
        into ``system/*`` metrics until :meth:`end`. Returns False if unavailable."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self._id,
                sampling_interval=interval_s,
                resume_logging=resume,
                tracking_uri=self.tracking_uri,
            )
        except ImportError as exc:  # psutil missing
            log.warning("system metrics disabled: %s", exc)
            return False
        monitor.start()
        self._monitor = monitor
        return True

    def end(self, status: str = "FINISHED") -> None:
        """Stop system metrics and mark the run ``FINISHED``/``FAILED``/``KILLED``."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self.client.set_terminated(self._id, status=status)

    @property
    def _id(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MlflowRunLogger has no run id")
        return self.run_id

    def __enter__(self) -> MlflowRunLogger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        failed = "KILLED" if kind is KeyboardInterrupt else "FAILED"
        self.end("FINISHED" if kind is None else failed)


def _resume(uri: str, run_id: str, cfg: RefSAMConfig) -> MlflowRunLogger:
    logger = MlflowRunLogger(run_id, tracking_uri=uri)
    try:
        run = logger.client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"MLflow run {run_id!r} not found in {uri}: cannot resume it there "
            "(point tracking.uri or MLFLOW_TRACKING_URI at the store the checkpoint was logged to)"
        ) from None
    resumes = int(run.data.tags.get("refsam.resumes", "0")) + 1
    logger.client.update_run(run_id, status="RUNNING")
    logger.skip_logged_steps()
    logger.set_tags({"refsam.resumes": resumes})
    if run.data.tags.get("refsam.config_hash") != cfg.config_hash():
        logger.log_text(cfg.to_yaml(), f"config-resume-{resumes}.yaml")
    logger.log_params(config_params(cfg))
    log.info("resumed MLflow run %s (resume %d) in %s", run_id, resumes, uri)
    return logger


def _create(
    cfg: RefSAMConfig, uri: str, root: Path, run_name: str, tags: dict[str, str]
) -> MlflowRunLogger:
    client = client_for_uri(uri)
    experiment_id = ensure_experiment(client, experiment_name(cfg))
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    logger = MlflowRunLogger(run.info.run_id, tracking_uri=uri)
    logger.log_params(config_params(cfg))
    logger.log_text(cfg.to_yaml(), "config.yaml")
    log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, uri)
    return logger


def start_training_run(
    cfg: RefSAMConfig,
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    data_manifests: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = True,
    system_metrics_interval_s: float = 10.0,
    project_root: Path | None = None,
) -> MlflowRunLogger:
    """Start the training run of ``cfg``, or continue run ``run_id`` (a resumed training).

    Logs the flattened config as params, ``config.yaml``, provenance tags (git commit,
    config hash, ``data.<set>`` manifest hashes from ``data_manifests``, package versions)
    and, if ``system_metrics``, ``system/*`` metrics. Callers skip tracking entirely when
    ``cfg.tracking.enabled`` is False.
    """
    root = Path(project_root) if project_root is not None else default_project_root()
    uri = tracking_uri(cfg.tracking, root)
    if run_id is not None:
        logger = _resume(uri, run_id, cfg)
        if data_manifests:
            logger.set_tags({f"data.{k}": v for k, v in data_manifests.items()})
    else:
        all_tags = {**run_tags(cfg, root, data_manifests), KIND_TAG: "train", **(tags or {})}
        logger = _create(cfg, uri, root, run_name or cfg.train.run_name, all_tags)
    if system_metrics:
        logger.start_system_metrics(system_metrics_interval_s, resume=run_id is not None)
    return logger


def start_evaluation_run(
    cfg: RefSAMConfig,
    *,
    dataset: str,
    split: str,
    checkpoint: Path | str | None = None,
    train_run_id: str | None = None,
    data_manifests: Mapping[str, str] | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    project_root: Path | None = None,
) -> MlflowRunLogger:
    """Start an evaluation run of a checkpoint on ``dataset/split``, nested under the
    training run ``train_run_id`` when given (the checkpoint records it)."""
    root = Path(project_root) if project_root is not None else default_project_root()
    uri = tracking_uri(cfg.tracking, root)
    all_tags = {
        **run_tags(cfg, root, data_manifests),
        KIND_TAG: "eval",
        "refsam.eval_set": f"{dataset}/{split}",
        **({"refsam.checkpoint": str(checkpoint)} if checkpoint is not None else {}),
        **(
            {"mlflow.parentRunId": train_run_id, "refsam.train_run_id": train_run_id}
            if train_run_id
            else {}
        ),
        **(tags or {}),
    }
    name = run_name or f"eval-{cfg.train.run_name}-{dataset}-{split}"
    return _create(cfg, uri, root, name, all_tags)


def eval_metric_key(dataset: str, split: str, metric: str) -> str:
    """Key of an evaluation metric copied into the training run: ``eval/<ds>/<split>/<m>``."""
    return metric_key(f"{EVAL_PREFIX}/{dataset}/{split}/{metric}")


def log_evaluation(
    eval_logger: MlflowRunLogger,
    dataset: str,
    split: str,
    metrics: Mapping[str, float],
    *,
    step: int = 0,
    train_run_id: str | None = None,
    files: Mapping[str, Path | None] | None = None,
) -> None:
    """Log an evaluation's metrics (``J``, ``F``, ``J&F``, …) and output files.

    The metrics go to the evaluation run at ``step`` and, when ``train_run_id`` is given,
    into that training run as ``eval/<dataset>/<split>/<metric>`` at the same step.
    ``files`` maps an artifact folder to a file or folder (``{"tables": csv, "overlays":
    dir}``); None values are skipped.
    """
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
    eval_logger.log_metrics(numeric, step)
    for folder, path in (files or {}).items():
        if path is not None:
            eval_logger.log_artifact(Path(path), folder)
    if train_run_id is not None:
        train = MlflowRunLogger(train_run_id, tracking_uri=eval_logger.tracking_uri)
        train.log_metrics({eval_metric_key(dataset, split, k): v for k, v in numeric.items()}, step)
