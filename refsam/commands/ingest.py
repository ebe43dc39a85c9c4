"""``refsam ingest``: raw dataset split(s) → our WebDataset shards (DATA.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from refsam.commands._types import positive_int
from refsam.data.shards import DEFAULT_SHARD_SIZE, IngestSummary, ingest
from refsam.data.sources import dataset_names, raw_dir_name, source_class
from refsam.errors import UserError
from refsam.storage import as_path


def register(subparsers: Any) -> None:
    """Add the ``ingest`` subcommand."""
    parser = subparsers.add_parser(
        "ingest",
        help="convert a raw dataset split into shards (tar + index.parquet + manifest.json)",
        description=(
            "Read a raw dataset in its published layout and write OUT/<dataset>/<split>/ shards. "
            "Bad items are quarantined (quarantine.jsonl); bad whole files are fatal. Re-running "
            "skips complete shards. With --all, RAW holds the dataset roots (e.g. datasets/demo/raw)."
        ),
    )
    parser.add_argument("--dataset", help=f"one of {', '.join(dataset_names())}")
    parser.add_argument("--split", help="split name (default: every split of the dataset)")
    parser.add_argument("--all", action="store_true", help="every dataset/split found under --raw")
    parser.add_argument(
        "--raw",
        type=as_path,
        required=True,
        help="the dataset's raw root (with --all: their parent)",
    )
    parser.add_argument(
        "--out", type=as_path, required=True, help="shards root, e.g. datasets/shards"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="parallel shard writers (default 1)"
    )
    parser.add_argument(
        "--shard-size",
        type=positive_int,
        default=DEFAULT_SHARD_SIZE,
        help=f"videos per shard (default {DEFAULT_SHARD_SIZE})",
    )
    parser.add_argument("--strict", action="store_true", help="fail if any item is quarantined")
    parser.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    if args.all:
        if args.dataset or args.split:
            raise UserError("--all ingests every dataset and split: drop --dataset/--split")
        jobs = [
            (name, split, args.raw / raw_dir_name(name))
            for name in dataset_names()
            if (args.raw / raw_dir_name(name)).is_dir()
            for split in source_class(name).splits
        ]
        if not jobs:
            raise UserError(
                f"{args.raw}: no dataset roots found; expected folders like "
                f"{', '.join(sorted({raw_dir_name(n) for n in dataset_names()}))}"
            )
        return jobs
    if not args.dataset:
        raise UserError("give --dataset NAME (or --all)")
    splits = [args.split] if args.split else list(source_class(args.dataset).splits)
    return [(args.dataset, split, args.raw) for split in splits]


def print_summaries(summaries: list[IngestSummary]) -> None:
    """One line per split, then the table of quarantine reasons."""
    print(
        f"{'dataset/split':28} {'videos':>7} {'expr':>6} {'frames':>7} {'shards':>7} {'skipped':>8} {'quar.':>6}"
    )
    for s in summaries:
        print(
            f"{s.dataset + '/' + s.split:28} {s.videos:7d} {s.expressions:6d} {s.frames:7d} "
            f"{s.shards:7d} {s.shards_skipped:8d} {s.quarantined:6d}"
        )
    reasons: dict[str, int] = {}
    for s in summaries:
        for reason, count in s.quarantine_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
    print("quarantined items by reason:" + ("" if reasons else " none"))
    for reason, count in sorted(reasons.items()):
        print(f"  {reason:24} {count:6d}")


def run(args: argparse.Namespace) -> int:
    summaries = []
    for dataset, split, raw in _jobs(args):
        summaries.append(
            ingest(
                dataset,
                split,
                raw,
                args.out,
                workers=args.workers,
                shard_size=args.shard_size,
                strict=args.strict,
            )
        )
    print_summaries(summaries)
    print(f"shards written under {args.out}")
    return 0
