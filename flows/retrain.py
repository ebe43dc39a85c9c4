"""Prefect 3 flow ``retrain``: ingest (cached) → train → evaluate → promote ``champion``.

1. Ingest every split the config trains or evaluates on with the ingest flow
   (:mod:`flows.ingest`): shards are cached by the raw data's fingerprint, the code version
   and the shard size (and checked by sha256), so unchanged data costs a re-check, not a
   re-write.
2. Train all stages (``flows.train``; ``torchrun`` when ``train.devices > 1``) into a fresh
   run directory ``<train.run_name>-<UTC time>`` and a new MLflow training run.
3. Score every ``eval.sets`` split (``flows.evaluate``); failures are reported.
4. Register the checkpoint as a new model version and compare its ``eval.selection``
   value with the registry's ``champion`` on the same eval data (manifest hash); if the
   champion was scored on other data, re-score it first. The alias moves only on a
   strict improvement (a tie keeps it). The decision and both numbers are stored as
   ``decision.*`` version tags and on the training run.

The champion policy lives in :mod:`refsam.tracking.champion` (registry rules in
:mod:`refsam.tracking.registry`); this flow only composes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    IO_RETRIES,
    IO_RETRY_DELAY_S,
    ingest_task_runner,
    load_flow_config,
    mlflow_model_url,
    mlflow_ui_command,
    parse_selection,
    required_splits,
    retry_on_io,
    score_split,
    with_run_name,
)
from flows.evaluate import EvalOutcome, EvalSetsFailed, evaluate_sets
from flows.train import TrainOutcome, train_task
from refsam.config import DataSplit, RefSAMConfig
from refsam.paths import timestamped_run_name

if TYPE_CHECKING:  # mlflow is imported only when the flow reaches the registry
    from refsam.tracking.champion import ChampionDecision


@dataclass
class RetrainOutcome:
    """Everything one retrain run did; ``failed_sets`` lists eval sets that failed."""

    config: str
    train: TrainOutcome
    evals: list[EvalOutcome]
    decision: ChampionDecision | None
    ingest: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None
    ui_command: str | None = None

    @property
    def failed_sets(self) -> list[EvalOutcome]:
        return [e for e in self.evals if not e.ok]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_splits(cfg: RefSAMConfig, dask_address: str | None = None) -> list[dict[str, Any]]:
    """Run the ingest flow (a subflow) for every split of ``cfg``; returns the summaries."""
    from flows.ingest import ingest_flow
    from refsam.data.sources import raw_dir_name

    summaries = []
    for split in required_splits(cfg):
        raw = cfg.data.raw_root / raw_dir_name(split.dataset)
        runner = ingest_task_runner(cfg.data.ingest_workers, dask_address)
        ingest = ingest_flow.with_options(
            task_runner=runner, flow_run_name=f"ingest-{split.dataset}-{split.split}"
        )
        summaries.append(
            ingest(
                split.dataset, split.split, str(raw), str(cfg.data.shards_root), cfg.data.shard_size
            )
        )
    return summaries


@task(
    name="register-model",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def register_task(
    cfg: RefSAMConfig,
    run_id: str,
    checkpoint: Path,
    metrics: dict[str, float],
    manifest_hash: str | None,
    step: int | None = None,
) -> str:
    from refsam.tracking import register_checkpoint

    return register_checkpoint(
        run_id, checkpoint, cfg, metrics, manifest_hash=manifest_hash, device="cpu", step=step
    )


@task(
    name="rescore-champion",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def rescore_champion(
    cfg: RefSAMConfig, version: str, split: DataSplit, metric: str, manifest_hash: str, out: Path
) -> float:
    """The champion's ``metric`` on today's ``split`` (its own checkpoint and settings)."""
    from refsam.tracking import resolve_model_uri

    name, alias = cfg.tracking.registered_model, cfg.tracking.champion_alias
    checkpoint = resolve_model_uri(f"models:/{name}@{alias}", tracking=cfg.tracking)
    result = score_split(cfg, split, checkpoint, out)
    if metric not in result.metrics:
        raise RuntimeError(
            f"re-scoring champion v{version} on {split.tag} gave no {metric!r} "
            f"(got {', '.join(result.metrics)})"
        )
    value = float(result.metrics[metric])
    get_run_logger().info(
        "champion v%s re-scored on %s (manifest %s): %s = %.4f",
        version,
        split.tag,
        manifest_hash,
        metric,
        value,
    )
    return value


@task(
    name="promote-if-better",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def promote_task(
    cfg: RefSAMConfig, version: str, value: float, manifest_hash: str, current: Any
) -> Any:
    from refsam.tracking import promote_if_better

    return promote_if_better(
        None, version, value, manifest_hash, current=current, tracking=cfg.tracking
    )


def decide_champion(
    cfg: RefSAMConfig, trained: TrainOutcome, evals: list[EvalOutcome]
) -> ChampionDecision:
    """The registry's champion policy (:func:`refsam.tracking.decide_champion`) with its
    store and scoring steps run as retried tasks."""
    from refsam.tracking import decide_champion as champion_policy
    from refsam.tracking import tracking_uri

    def rescore(version: str, split: DataSplit, metric: str, digest: str) -> float:
        out = Path(trained.run_dir) / "eval" / f"champion-v{version}-{split.dataset}-{split.split}"
        return rescore_champion(cfg, version, split, metric, digest, out)

    decision = champion_policy(
        cfg,
        trained.mlflow_run_id,
        Path(trained.checkpoint),
        {f"{e.tag}/{k}": v for e in evals if e.ok for k, v in e.metrics.items()},
        rescore=rescore,
        step=trained.steps,
        register=register_task,
        promote=promote_task,
    )
    if decision.version is not None:
        uri = tracking_uri(cfg.tracking)
        decision.model_url = mlflow_model_url(uri, cfg.tracking.registered_model, decision.version)
    log = get_run_logger()
    (log.info if decision.value is not None else log.warning)(
        "champion decision: %s", decision.reason
    )
    return decision


def _record_decision(cfg: RefSAMConfig, run_id: str, decision: ChampionDecision) -> None:
    from refsam.tracking import MlflowRunLogger, tracking_uri

    run = MlflowRunLogger(run_id, tracking_uri=tracking_uri(cfg.tracking))
    run.set_tags(
        {
            "champion.promoted": str(decision.promoted).lower(),
            "champion.reason": decision.reason,
            "champion.version": decision.version,
            "champion.previous_version": decision.champion_version,
            "champion.rescored": str(decision.champion_rescored).lower(),
        }
    )
    numbers = {"selection/candidate": decision.value, "selection/champion": decision.champion_value}
    run.log_metrics({k: v for k, v in numbers.items() if v is not None}, step=0)


def summary_rows(outcome: RetrainOutcome) -> list[list[str]]:
    """The summary table: one row per eval set (J, F, J&F, J&F per expression subset, eval
    seconds) or its error."""
    rows = [["dataset/split", "J", "F", "J&F", "J&F per subset", "eval s"]]
    for e in outcome.evals:
        if e.ok:
            cells = [f"{e.metrics[k]:.4f}" if k in e.metrics else "-" for k in ("J", "F", "J&F")]
            rows.append([e.tag, *cells, _subsets_cell(e.metrics), f"{e.seconds:.1f}"])
        else:
            rows.append([e.tag, "FAILED", "", "", "", (e.error or "")[:60]])
    return rows


def _subsets_cell(metrics: dict[str, float]) -> str:
    """``appearance 0.6123 · motion 0.3561`` from ``J&F/<subset>`` metrics, or ``-``."""
    found = sorted((k.removeprefix("J&F/"), v) for k, v in metrics.items() if k.startswith("J&F/"))
    return " · ".join(f"{name} {value:.4f}" for name, value in found) or "-"


def summary_markdown(outcome: RetrainOutcome) -> str:
    rows = summary_rows(outcome)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    t = outcome.train
    lines += [
        "",
        f"- trainable params: {t.total_trainable:,}",
        f"- training run: {t.mlflow_url or 'tracking off'}",
    ]
    if outcome.decision is not None:
        lines.append(f"- champion: {outcome.decision.reason}")
    lines.append("- wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in outcome.timings.items()))
    return "\n".join(lines)


@flow(name="retrain")
def retrain_flow(
    config: str = "configs/demo-tiny-cpu.yaml",
    overrides: list[str] | None = None,
    ingest: bool = True,
    dask_address: str | None = None,
) -> RetrainOutcome:
    """Ingest → train → evaluate → champion (module docstring). ``overrides`` are dotted
    ``key=value`` settings; ``dask_address`` sends ingest shard tasks to a Dask cluster.
    Ends failed (after recording the decision) when an eval set failed."""
    logger = get_run_logger()
    start = time.perf_counter()
    timings: dict[str, float] = {}
    cfg = load_flow_config(config, overrides)
    parse_selection(cfg.eval.selection)
    summaries: list[dict[str, Any]] = []
    if ingest:
        summaries = ingest_splits(cfg, dask_address)
        timings["ingest"] = time.perf_counter() - start
    cfg = with_run_name(cfg, timestamped_run_name(cfg.train.run_name))
    trained = train_task(cfg, final_eval=False)
    timings["train"] = trained.wall_s
    mark = time.perf_counter()
    evals = evaluate_sets(
        cfg,
        Path(trained.checkpoint),
        Path(trained.run_dir) / "eval",
        train_run_id=trained.mlflow_run_id,
        step=trained.steps,
    )
    timings["evaluate"] = time.perf_counter() - mark
    decision = None
    uri = ui = None
    if cfg.tracking.enabled and trained.mlflow_run_id:
        from refsam.tracking import MlflowRunLogger, log_jf_plot, tracking_uri

        # the curve and the evaluations just copied into the training run
        log_jf_plot(MlflowRunLogger(trained.mlflow_run_id, tracking_uri=tracking_uri(cfg.tracking)))

        mark = time.perf_counter()
        decision = decide_champion(cfg, trained, evals)
        _record_decision(cfg, trained.mlflow_run_id, decision)
        timings["registry"] = time.perf_counter() - mark
        uri = tracking_uri(cfg.tracking)
        ui = mlflow_ui_command(uri)
    timings["total"] = time.perf_counter() - start
    outcome = RetrainOutcome(
        config=str(config),
        train=trained,
        evals=evals,
        decision=decision,
        ingest=summaries,
        timings=timings,
        tracking_uri=uri,
        ui_command=ui,
    )
    create_markdown_artifact(
        summary_markdown(outcome), key="retrain-summary", description="retrain summary"
    )
    if outcome.failed_sets:
        decided = f"; champion: {decision.reason}" if decision else ""
        raise EvalSetsFailed(outcome.failed_sets, decided)
    logger.info("retrain done in %.0f s", timings["total"])
    return outcome
