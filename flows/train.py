"""Prefect 3 flow ``train``: one config's stages, checkpoints, an MLflow training run.

The work is :func:`refsam.train.runner.train`; this module only wraps it in a task that
opens and closes the MLflow run (by explicit run id, safe in task threads) and, when
``train.devices > 1``, launches it under ``torchrun`` instead of in-process. ``torchrun``
runs this module (``python -m flows.train``) on every rank; rank 0 logs to the run the
flow opened and writes the result JSON the task reads back.

Multi-node: ``REFSAM_TORCHRUN_ARGS`` replaces the default ``--standalone`` (e.g.
``--nnodes=2 --node-rank=0 --rdzv-backend=c10d --rdzv-endpoint=host0:29400 --rdzv-id=r1``;
docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import load_flow_config, mlflow_run_url, with_run_name
from refsam.config import RefSAMConfig, load_config

TORCHRUN_ARGS_ENV = "REFSAM_TORCHRUN_ARGS"
DEFAULT_TORCHRUN_ARGS = ("--standalone",)


@dataclass
class TrainOutcome:
    """What the train task produced (paths as text so the record is plain JSON)."""

    run_name: str
    run_dir: str
    checkpoint: str
    steps: int
    wall_s: float
    trainable_params: dict[str, int]
    stages: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    devices: int = 1
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_url: str | None = None

    @property
    def total_trainable(self) -> int:
        return sum(self.trainable_params.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def result_record(result: Any) -> dict[str, Any]:
    """A :class:`~refsam.train.runner.TrainResult` as plain JSON-able values."""
    checkpoint = result.best_checkpoint or result.last_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training in {result.run_dir} wrote no checkpoint")
    return {
        "run_dir": str(result.run_dir),
        "checkpoint": str(checkpoint),
        "steps": int(result.steps),
        "wall_s": float(result.wall_s),
        "trainable_params": {k: int(v) for k, v in result.trainable_params.items()},
        "stages": [
            {
                "name": s.name,
                "steps": s.steps,
                "clips": s.clips,
                "final_loss": s.final_loss,
                "seconds": s.seconds,
            }
            for s in result.stages
        ],
        "metrics": {k: float(v) for k, v in result.metrics.items()},
    }


def torchrun_command(
    config_yaml: Path, result_json: Path, nproc: int, run_id: str | None, tracking_uri: str | None
) -> list[str]:
    """The ``torchrun`` command line that trains ``config_yaml`` on ``nproc`` processes."""
    launcher = shlex.split(os.environ.get(TORCHRUN_ARGS_ENV, "")) or list(DEFAULT_TORCHRUN_ARGS)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launcher,
        f"--nproc-per-node={nproc}",
        "-m",
        "flows.train",
        "--config",
        str(config_yaml),
        "--result",
        str(result_json),
    ]
    if run_id is not None and tracking_uri is not None:
        command += ["--run-id", run_id, "--tracking-uri", tracking_uri]
    return command


def _train_torchrun(
    cfg: RefSAMConfig, run_id: str | None, tracking_uri: str | None, final_eval: bool = True
) -> dict[str, Any]:
    logger = get_run_logger()
    with tempfile.TemporaryDirectory(prefix="refsam-torchrun-") as tmp:
        config_yaml, result_json = Path(tmp) / "config.yaml", Path(tmp) / "result.json"
        config_yaml.write_text(cfg.to_yaml(), encoding="utf-8")
        command = torchrun_command(
            config_yaml, result_json, cfg.train.devices, run_id, tracking_uri
        )
        if not final_eval:
            command.append("--no-final-eval")
        logger.info("launching %s", shlex.join(command))
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"torchrun exited with code {completed.returncode}: {shlex.join(command)}"
            )
        return json.loads(result_json.read_text(encoding="utf-8"))


def _start_tracking(cfg: RefSAMConfig) -> Any:
    if not cfg.tracking.enabled:
        return None
    from prefect.runtime import flow_run

    from refsam.tracking import start_training_run
    from refsam.train.state import data_manifests

    tags = {"prefect.flow_run_id": str(flow_run.id)} if flow_run.id else {}
    return start_training_run(
        cfg, run_name=cfg.train.run_name, data_manifests=data_manifests(cfg), tags=tags
    )


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: RefSAMConfig, final_eval: bool = True) -> TrainOutcome:
    """Train every stage of ``cfg`` in an MLflow training run (``final_eval=False``: skip
    the library's end-of-training evaluation; the caller evaluates separately)."""
    from refsam.train.runner import train

    tracker = _start_tracking(cfg)
    run_id = tracker.run_id if tracker is not None else None
    uri = tracker.tracking_uri if tracker is not None else None
    with tracker if tracker is not None else nullcontext():
        # the config is passed as it is: the checkpoint's config hash is the run's
        if cfg.train.devices > 1:
            record = _train_torchrun(cfg, run_id, uri, final_eval)
        else:
            record = result_record(train(cfg, logger=tracker, final_eval=final_eval))
        if tracker is not None:  # the trainer logged trainable/<group>, trainable_params
            from refsam.tracking import log_jf_plot

            tracker.log_metrics({"time/train_s": record["wall_s"]}, record["steps"])
            log_jf_plot(tracker)
    outcome = TrainOutcome(
        run_name=cfg.train.run_name, devices=cfg.train.devices, mlflow_run_id=run_id, **record
    )
    if tracker is not None:
        from refsam.tracking import get_client

        outcome.mlflow_experiment_id = get_client(cfg.tracking).get_run(run_id).info.experiment_id
        outcome.mlflow_url = mlflow_run_url(uri, outcome.mlflow_experiment_id, run_id)
    get_run_logger().info(
        "trained %s: %d steps in %.0f s, checkpoint %s, MLflow %s",
        outcome.run_name,
        outcome.steps,
        outcome.wall_s,
        outcome.checkpoint,
        outcome.mlflow_url or "off",
    )
    return outcome


@flow(name="train")
def train_flow(
    config: str, overrides: list[str] | None = None, run_name: str | None = None
) -> TrainOutcome:
    """Train ``config`` (+ overrides); ``run_name`` names the run directory (default: the
    config's ``train.run_name``). The config's eval sets are scored at the end."""
    cfg = load_flow_config(config, overrides)
    if run_name:
        cfg = with_run_name(cfg, run_name)
    return train_task(cfg, final_eval=True)


def main(argv: list[str] | None = None) -> int:
    """``torchrun … -m flows.train --config C --result R [--run-id ID --tracking-uri U]``."""
    parser = argparse.ArgumentParser(prog="python -m flows.train", description=main.__doc__)
    parser.add_argument("--config", type=Path, required=True, help="resolved config YAML")
    parser.add_argument(
        "--result", type=Path, required=True, help="rank 0 writes the result JSON here"
    )
    parser.add_argument("--run-id", help="MLflow run to log to (rank 0)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI of --run-id")
    parser.add_argument(
        "--no-final-eval", action="store_true", help="skip the end-of-training evaluation"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from refsam.train.runner import train

    cfg = load_config(args.config)
    logger = None
    if args.run_id and args.tracking_uri:
        from refsam.tracking import MlflowRunLogger

        logger = MlflowRunLogger(args.run_id, tracking_uri=args.tracking_uri)
    result = train(cfg, logger=logger, final_eval=not args.no_final_eval)
    if int(os.environ.get("RANK", "0")) == 0:
        args.result.write_text(json.dumps(result_record(result)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
