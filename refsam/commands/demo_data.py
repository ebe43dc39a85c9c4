"""``refsam demo-data``: generate the embedded demo datasets in the published raw formats."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from refsam.commands._types import positive_int
from refsam.data.demo import SCALES, generate_demo
from refsam.errors import UserError


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--seed must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise UserError(f"--seed must be a non-negative integer, got {value}")
    return value


def default_workers() -> int:
    """The CPUs this process may use, at most 8."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API on this OS
        usable = os.cpu_count() or 1
    return max(1, min(8, usable))


def register(subparsers: Any) -> None:
    """Add the ``demo-data`` subcommand."""
    parser = subparsers.add_parser(
        "demo-data",
        help="write synthetic demo datasets (raw formats) under OUT/raw and OUT/heldout",
        description=(
            "Generate deterministic synthetic Ref-YouTube-VOS, Ref-DAVIS17, MeViS and "
            "RefCOCO/+/g data in their published raw layouts under OUT/raw, and the "
            "held-out ground truth of splits without public masks under OUT/heldout."
        ),
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (e.g. datasets/demo)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale", default="small", help=f"one of {', '.join(SCALES)} (default small)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help="processes rendering frames (default: the usable CPUs, at most 8; the files "
        "are the same whatever the number)",
    )
    parser.set_defaults(func=run)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def run(args: argparse.Namespace) -> int:
    """Generate the demo data and print a table of what was written."""
    summary = generate_demo(args.out, seed=args.seed, scale=args.scale, workers=args.workers)
    print(f"{'dataset':<17}{'videos/images':>14}{'expressions':>13}{'frames':>9}{'size':>11}")
    for name, row in summary["datasets"].items():
        items = row.get("videos", row.get("images", 0))
        expressions = row.get("expressions", "-")
        frames = row.get("frames", "-")
        print(f"{name:<17}{items:>14}{expressions:>13}{frames:>9}{_size(row['bytes']):>11}")
    out = Path(summary["out"])
    print(
        f"wrote {out / 'raw'} and {out / 'heldout'} ({_size(summary['total_bytes'])}, "
        f"scale {summary['scale']}, seed {summary['seed']}) in {summary['seconds']:.1f} s"
    )
    return 0
