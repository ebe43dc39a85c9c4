"""Prefect 3 flow ``evaluate``: score a checkpoint on eval sets, one task per set.

The work is :func:`refsam.eval.evaluator.evaluate` (online inference, J/F/J&F, per-sequence
table, overlays of the worst sequences, submission zip where the protocol wants one).
Each set gets an MLflow evaluation run, nested under the training run when known, whose
headline metrics are also copied into the training run. A set that fails is retried only
on transient I/O errors; otherwise it is reported as failed (``EvalOutcome.ok`` False with
the error) and the flow ends failed after scoring the other sets: nothing is hidden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import (
    IO_RETRIES,
    IO_RETRY_DELAY_S,
    load_flow_config,
    mlflow_run_url,
    retry_on_io,
    score_split,
)
from refsam.config import DataSplit, RefSAMConfig


@dataclass
class EvalOutcome:
    """One eval set's result: metrics (``J``, ``F``, ``J&F``, …) or the error."""

    dataset: str
    split: str
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    out_dir: str | None = None
    submission: str | None = None
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None

    @property
    def tag(self) -> str:
        return f"{self.dataset}/{self.split}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EvalSetsFailed(RuntimeError):
    """Some eval sets failed; the message names each with its error."""

    def __init__(self, failed: list[EvalOutcome], context: str = "") -> None:
        self.failed = failed
        names = "; ".join(f"{e.tag}: {e.error}" for e in failed)
        super().__init__(f"{len(failed)} eval set(s) failed: {names}{context}")


def _start_eval_run(
    cfg: RefSAMConfig, split: DataSplit, checkpoint: Path, train_run_id: str | None
) -> Any:
    if not cfg.tracking.enabled:
        return None
    from refsam.tracking import start_evaluation_run
    from refsam.train.state import data_manifests

    manifests = {k: v for k, v in data_manifests(cfg).items() if k == split.tag}
    return start_evaluation_run(
        cfg,
        dataset=split.dataset,
        split=split.split,
        checkpoint=checkpoint,
        train_run_id=train_run_id,
        data_manifests=manifests,
    )


@task(
    name="evaluate-set",
    task_run_name="evaluate-{split.dataset}-{split.split}",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def evaluate_set(
    cfg: RefSAMConfig,
    checkpoint: Path,
    split: DataSplit,
    out: Path,
    train_run_id: str | None = None,
    step: int = 0,
) -> EvalOutcome:
    """Score ``checkpoint`` on one split into ``out`` and log it (module docstring)."""
    tracker = _start_eval_run(cfg, split, checkpoint, train_run_id)
    try:
        result = score_split(cfg, split, checkpoint, out)
        metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
        outcome = EvalOutcome(
            split.dataset,
            split.split,
            True,
            metrics,
            seconds=float(result.seconds),
            out_dir=str(out),
            submission=str(result.submission) if result.submission else None,
        )
        if tracker is not None:
            from refsam.tracking import log_evaluation

            files = {
                "tables": result.per_sequence_csv,
                "metrics": result.metrics_json,
                "overlays": out / "overlays" if result.overlays else None,
                "submission": result.submission,
            }
            log_evaluation(
                tracker,
                split.dataset,
                split.split,
                metrics,
                step=step,
                train_run_id=train_run_id,
                files=files,
            )
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.end("FINISHED")
        from refsam.tracking import get_client

        experiment = get_client(cfg.tracking).get_run(tracker.run_id).info.experiment_id
        outcome.mlflow_run_id = tracker.run_id
        outcome.mlflow_url = mlflow_run_url(tracker.tracking_uri, experiment, tracker.run_id)
    get_run_logger().info(
        "%s: %s",
        split.tag,
        ", ".join(f"{k}={metrics[k]:.4f}" for k in ("J", "F", "J&F") if k in metrics),
    )
    return outcome


def evaluate_sets(
    cfg: RefSAMConfig,
    checkpoint: Path,
    out_root: Path,
    *,
    sets: list[DataSplit] | None = None,
    train_run_id: str | None = None,
    step: int = 0,
) -> list[EvalOutcome]:
    """Run :func:`evaluate_set` for every set (``cfg.eval.sets`` by default), one after the
    other (each uses all cores); a failed set becomes ``EvalOutcome(ok=False, error=…)``."""
    logger = get_run_logger()
    outcomes = []
    for split in sets if sets is not None else cfg.eval.sets:
        out = Path(out_root) / f"{split.dataset}-{split.split}"
        state = evaluate_set(
            cfg, Path(checkpoint), split, out, train_run_id, step, return_state=True
        )
        if state.is_completed():
            outcomes.append(state.result())
            continue
        try:
            state.result()
            error = state.message or state.name
        except BaseException as exc:  # the task's exception: report it, score the other sets
            error = f"{type(exc).__name__}: {exc}"
        logger.error("eval set %s failed: %s", split.tag, error)
        outcomes.append(
            EvalOutcome(split.dataset, split.split, False, error=error, out_dir=str(out))
        )
    return outcomes


def resolve_checkpoint(checkpoint: str, cfg: RefSAMConfig | None) -> Path:
    """A file path, ``runs:/…`` or ``models:/<name>@<alias>`` → the local checkpoint file."""
    from refsam.tracking import resolve_model_uri

    return resolve_model_uri(checkpoint, tracking=cfg.tracking if cfg is not None else None)


def _checkpoint_config(path: Path) -> RefSAMConfig:
    from refsam.modeling.checkpoint import config_of, load_checkpoint

    return config_of(load_checkpoint(path), path)


@flow(name="evaluate")
def evaluate_flow(
    checkpoint: str,
    config: str | None = None,
    overrides: list[str] | None = None,
    sets: list[str] | None = None,
    out: str | None = None,
    train_run_id: str | None = None,
) -> list[EvalOutcome]:
    """Score ``checkpoint`` (path, ``runs:/…`` or ``models:/refsam@champion``) on ``sets``
    (``["ref-davis17/valid", …]``; default: the config's ``eval.sets``). The config is
    ``config`` + ``overrides`` or, without ``config``, the one stored in the checkpoint.
    Writes under ``out`` (default ``<train.output_dir>/eval-<UTC time>``)."""
    cfg = load_flow_config(config, overrides) if config else None
    path = resolve_checkpoint(checkpoint, cfg)
    cfg = cfg or _checkpoint_config(path)
    chosen = None
    if sets:
        chosen = [DataSplit(dataset=s.split("/", 1)[0], split=s.split("/", 1)[-1]) for s in sets]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_root = Path(out) if out else Path(cfg.train.output_dir) / f"eval-{stamp}"
    outcomes = evaluate_sets(cfg, path, out_root, sets=chosen, train_run_id=train_run_id)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise EvalSetsFailed(failed)
    return outcomes
