"""``refsam runs compare``: recent training runs side by side (one column per run);
``refsam runs ablation``: runs grouped by their switches, J&F over seeds."""

from __future__ import annotations

import argparse
from typing import Any

from refsam.commands._types import positive_int

FIELDS = [
    ("champion", "champion"),
    ("run", "run_name"),
    ("run id", "run_id"),
    ("experiment", "experiment"),
    ("started (UTC)", "started"),
    ("status", "status"),
    ("variant", "variant"),
    ("dense path", "dense_path"),
    ("track token", "tracking"),
    ("adapters", "adapters"),
    ("temporal", "temporal"),
    ("seed", "seed"),
    ("text encoder", "text_encoder"),
    ("trainable params", "trainable_params"),
    ("lr", "lr"),
    ("frames per clip", "frames_per_clip"),
    ("git commit", "git_commit"),
]
MAX_CELL = 34


def register(subparsers: Any) -> None:
    """Add ``runs`` with its ``compare`` and ``ablation`` subcommands."""
    parser = subparsers.add_parser("runs", help="inspect MLflow training runs")
    actions = parser.add_subparsers(
        dest="runs_command", metavar="ACTION", parser_class=type(parser)
    )
    compare = actions.add_parser(
        "compare",
        help="show the last N training runs side by side",
        description=(
            "Compare recent training runs of the MLflow store (MLFLOW_TRACKING_URI or "
            "sqlite:///<project>/mlruns/mlflow.db): variant, text encoder, trainable "
            "params, lr, frames per clip, data versions and J/F/J&F per eval set; the run "
            "whose model version holds the champion alias is marked ★."
        ),
    )
    compare.add_argument("--last", type=positive_int, default=5, help="number of runs (default 5)")
    compare.add_argument("--experiment", default=None, help="experiment name (default: all)")
    compare.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (overrides the default)"
    )
    compare.set_defaults(func=run_compare)
    ablation = actions.add_parser(
        "ablation",
        help="group an experiment's runs by switches: J&F mean ± sd over seeds",
        description=(
            "Group the finished training runs of an experiment by their build switches "
            "(dense path, track token, adapters, temporal path) and print each group's J&F "
            "per eval set and expression subset as mean ± sd [min–max] over its seeds "
            "(what `make ablation` prints)."
        ),
    )
    ablation.add_argument("--experiment", required=True, help="experiment name")
    ablation.add_argument(
        "--last", type=positive_int, default=100, help="newest runs read (default 100)"
    )
    ablation.add_argument("--markdown", action="store_true", help="a Markdown table")
    ablation.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (overrides the default)"
    )
    ablation.set_defaults(func=run_ablation)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = (
            f"{value:.4g}"
            if abs(value) < 1e-2 or abs(value) >= 1e4
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _champion(version: str | None) -> str:
    return f"★ v{version}" if version else ""


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of :func:`refsam.tracking.compare_runs` as a text table, one column per run."""
    lines: list[tuple[str, list[str]]] = [
        (label, [_champion(r.get(key)) if key == "champion" else _cell(r[key]) for r in rows])
        for label, key in FIELDS
    ]
    data_sets = sorted({name for r in rows for name in r["data"]})
    lines += [(f"data {name}", [_cell(r["data"].get(name)) for r in rows]) for name in data_sets]
    eval_sets = sorted({name for r in rows for name in r["eval"]})
    for name in eval_sets:
        subsets = sorted({m for r in rows for m in r["eval"].get(name, {}) if "/" in m})
        for metric in ("J", "F", "J&F", *subsets):
            lines.append(
                (f"{name} {metric}", [_metric(r["eval"].get(name, {}).get(metric)) for r in rows])
            )
    label_width = max(len(label) for label, _ in lines)
    widths = [max(len(cells[i]) for _, cells in lines) for i in range(len(rows))]
    return "\n".join(
        (
            f"{label:<{label_width}}  "
            + "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))
        ).rstrip()
        for label, cells in lines
    )


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison table (or a note when there are no training runs)."""
    from refsam.config import TrackingConfig
    from refsam.tracking import compare_runs, tracking_uri

    tracking = TrackingConfig(uri=args.tracking_uri)
    rows = compare_runs(args.experiment, args.last, tracking=tracking)
    if not rows:
        print(
            f"no training runs in {tracking_uri(tracking)}"
            + (f" (experiment {args.experiment})" if args.experiment else "")
        )
        return 0
    print(format_table(rows))
    return 0


def run_ablation(args: argparse.Namespace) -> int:
    """Print the seed-averaged ablation table of one experiment."""
    from refsam.config import TrackingConfig
    from refsam.tracking import compare_runs
    from refsam.tracking.ablation import format_ablation, group_runs

    tracking = TrackingConfig(uri=args.tracking_uri)
    groups = group_runs(compare_runs(args.experiment, args.last, tracking=tracking))
    if not groups:
        print(f"no finished training runs in experiment {args.experiment}")
        return 0
    print(format_ablation(groups, markdown=args.markdown))
    return 0
