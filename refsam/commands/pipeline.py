"""``refsam pipeline``: run the Prefect ``retrain`` flow (ingest → train → evaluate →
champion) on one config and print the summary table and the next commands."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

from refsam.config import RefSAMConfig, load_config
from refsam.paths import has_manifest, split_dir


def register(subparsers: Any) -> None:
    """Add the ``pipeline`` subcommand."""
    parser = subparsers.add_parser(
        "pipeline",
        help="ingest (cached) → train → evaluate → promote champion (the Prefect retrain flow)",
        description=(
            "Run the retrain flow on CONFIG: ingest every split it uses (cached while raw data "
            "and code are unchanged), train all stages, score eval.sets, register the model and "
            "move the registry's champion alias only on a strict improvement of eval.selection."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="experiment YAML, e.g. configs/demo-tiny-cpu.yaml",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. train.lr=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--no-ingest", action="store_true", help="use the existing shards as they are"
    )
    parser.add_argument(
        "--dask-address", metavar="URL", help="run ingest shard tasks on this Dask scheduler"
    )
    parser.set_defaults(func=run)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def format_summary(outcome: Any, example: tuple[str, str] | None = None) -> str:
    """The end-of-pipeline report (see flows.retrain.RetrainOutcome)."""
    from flows.retrain import summary_rows

    t = outcome.train
    lines = ["", "==> pipeline summary", _table(summary_rows(outcome)), ""]
    groups = ", ".join(f"{k} {v:,}" for k, v in t.trainable_params.items())
    lines.append(f"trainable params: {t.total_trainable:,} ({groups})")
    lines.append("wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in outcome.timings.items()))
    lines.append(f"checkpoint: {t.checkpoint}")
    submissions = [e.submission for e in outcome.evals if e.submission]
    lines += [f"submission zip: {s}" for s in submissions]
    if t.mlflow_url:
        lines.append(f"MLflow training run {t.mlflow_run_id}: {t.mlflow_url}")
    d = outcome.decision
    if d is not None:
        champion = f"v{d.champion_version} {d.champion_value}" if d.champion_version else "none"
        lines.append(f"registered model version: v{d.version} ({d.model_url})")
        lines.append(
            f"{d.selection}: candidate {d.value} vs champion {champion}"
            f"{' (re-scored)' if d.champion_rescored else ''}"
        )
        lines.append(f"champion: {'PROMOTED' if d.promoted else 'kept'} — {d.reason}")
    lines += ["", "next:"]
    server = _server_uri(outcome.tracking_uri)
    if outcome.ui_command:
        then = "" if server else "   (then http://127.0.0.1:5000)"
        lines.append(f"  open the MLflow UI:  {outcome.ui_command}{then}")
    champion_uri = d.champion_uri if d is not None else None
    if server and champion_uri:  # the checkpoint stays on the server until predict asks
        source = f"MLFLOW_TRACKING_URI={server} .venv/bin/refsam predict --model {champion_uri}"
    else:
        checkpoint = (d.champion_checkpoint if d is not None else None) or t.checkpoint
        source = f".venv/bin/refsam predict --checkpoint {checkpoint}"
    video, text = example or ("<frames folder or video file>", "<expression>")
    lines.append(
        f"  predict on a video ({champion_uri or 'this run'}):\n"
        f'    {source} --video {video} --text "{text}" --out outputs/predict'
    )
    return "\n".join(lines)


def _server_uri(uri: str | None) -> str | None:
    """``uri`` if it names a tracking server (``http(s)://``), else None."""
    if uri is None:
        return None
    from refsam.tracking.store import is_server

    return uri if is_server(uri) else None


def predict_example(cfg: RefSAMConfig) -> tuple[str, str] | None:
    """(raw frame folder, expression) of the first video of the first eval set, for the
    printed ``refsam predict`` command; None when not found."""
    from refsam.data.loader import iter_eval_videos
    from refsam.data.sources import raw_dir_name

    for split in cfg.eval.sets:
        shard_dir = split_dir(cfg.data.shards_root, split.dataset, split.split)
        if not has_manifest(shard_dir):
            continue
        video = next(iter(iter_eval_videos(shard_dir)), None)
        if video is None or not video.expressions:
            continue
        raw = cfg.data.raw_root / raw_dir_name(split.dataset)
        folders = (p for p in raw.rglob(video.video) if p.is_dir() and "JPEGImages" in p.parts)
        folder = next(folders, None)
        if folder is not None:
            return str(folder), video.expressions[0].text
    return None


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)  # bad config → exit 2 before Prefect starts
    if not args.debug:  # one line per Prefect API call is noise at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from flows.common import prepare_prefect
    from flows.retrain import retrain_flow

    prepare_prefect()  # Prefect's temporary server: dies with us, time to start

    # SIGTERM unwinds like Ctrl-C, so the MLflow run is marked KILLED/FAILED and Prefect's
    # temporary server (stopped at exit) does not outlive us.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        outcome = retrain_flow(
            config=str(args.config),
            overrides=list(args.overrides),
            ingest=not args.no_ingest,
            dask_address=args.dask_address,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_summary(outcome, predict_example(cfg)))
    return 0
