"""``refsam train``: train every stage of a config (or check it with ``--dry-run``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train RefSAM on a config's stages (checkpoints, resume, periodic evaluation)",
        description=(
            "Train every stage of CONFIG (train.stages) into <train.output_dir>/<train.run_name>/ "
            "(checkpoints/, eval/). --resume auto continues the newest checkpoint of that run "
            "exactly; --dry-run checks every path, builds model, loaders and optimiser, prints "
            "parameter counts and exits. Multi-GPU: torchrun --nproc_per_node N -m refsam.cli train …"
        ),
    )
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted config override, e.g. train.lr=1e-4 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", metavar="PATH|auto", help="checkpoint to continue, or auto")
    parser.add_argument("--dry-run", action="store_true", help="check and count, train nothing")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), help="overrides train.device")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.set_defaults(func=run)


def _tracker(cfg: Any, resume: str | None, disabled: bool) -> Any:
    """An MLflow training run (continued when the resumed checkpoint names one), or None
    (tracking off, or a torchrun rank other than 0)."""
    if disabled or not cfg.tracking.enabled or int(os.environ.get("RANK", "0")) != 0:
        return None
    from refsam.tracking import start_training_run
    from refsam.train.runner import resume_run_id
    from refsam.train.state import data_manifests

    run_id = resume_run_id(cfg, resume) if resume else None
    return start_training_run(cfg, run_id=run_id, data_manifests=data_manifests(cfg))


def run(args: argparse.Namespace) -> int:
    from refsam.config import load_config

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    # the config is valid: now torch (the device), then data, model and MLflow
    from refsam.modeling.device import resolve_device
    from refsam.train.rundir_lock import run_dir_lock
    from refsam.train.runner import train

    resolve_device(cfg.train.device)
    if args.dry_run:
        result = train(cfg, dry_run=True, resume=args.resume)
        print(result.report)
        total = sum(result.trainable_params.values())
        print(f"dry run ok: {total:,} trainable parameters")
        return 0
    # the run directory's lock before MLflow: a refused second run must not touch the first's
    with run_dir_lock(cfg):
        tracker = _tracker(cfg, args.resume, args.no_tracking)
        with tracker if tracker is not None else contextlib.nullcontext():
            result = train(cfg, resume=args.resume, logger=tracker)
            if tracker is not None:
                from refsam.tracking import log_jf_plot

                log_jf_plot(tracker)
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s -> {result.run_dir}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(f"best checkpoint: {result.best_checkpoint}")
    for key, value in sorted(result.metrics.items()):
        if key.endswith(("/J", "/F", "/J&F", "/oIoU", "/mIoU")):
            print(f"  {key}: {value:.4f}")
    return 0
