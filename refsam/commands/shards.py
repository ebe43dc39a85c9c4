"""``refsam shards verify|show DIR``: check shards against their manifest; summarise them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from refsam.data.index import read_manifest, verify
from refsam.errors import UserError
from refsam.paths import MANIFEST
from refsam.storage import as_path


def register(subparsers: Any) -> None:
    """Add the ``shards`` subcommand group."""
    parser = subparsers.add_parser("shards", help="verify or summarise shard directories")
    sub = parser.add_subparsers(dest="shards_command", metavar="ACTION", parser_class=type(parser))
    check = sub.add_parser(
        "verify", help="checksums and counts against manifest.json (exit 1 on mismatch)"
    )
    check.add_argument(
        "dir", type=as_path, help="a <dataset>/<split> shard directory or a shards root"
    )
    check.set_defaults(func=run_verify)
    show = sub.add_parser(
        "show", help="counts, sizes, frames, expressions per split, quarantine summary"
    )
    show.add_argument(
        "dir", type=as_path, help="a <dataset>/<split> shard directory or a shards root"
    )
    show.set_defaults(func=run_show)
    parser.set_defaults(func=_no_action)


def _no_action(_args: argparse.Namespace) -> int:
    raise UserError("refsam shards: give an action, verify or show (see --help)")


def split_dirs(root: Path) -> list[Path]:
    """``root`` itself if it holds a manifest, else every ``*/*/manifest.json`` below it."""
    if (root / MANIFEST).is_file():
        return [root]
    found = sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))
    if not found:
        raise UserError(
            f"{root}: no {MANIFEST} found (expected a shard directory from `refsam ingest`)"
        )
    return found


def run_verify(args: argparse.Namespace) -> int:
    failed = False
    for shard_dir in split_dirs(args.dir):
        problems = verify(shard_dir)
        for problem in problems:
            print(f"FAIL {shard_dir}: {problem}")
        if not problems:
            print(f"ok   {shard_dir}")
        failed = failed or bool(problems)
    return 1 if failed else 0


def run_show(args: argparse.Namespace) -> int:
    print(
        f"{'dataset/split':28} {'shards':>6} {'MB':>8} {'videos':>7} {'frames':>7} {'expr':>6} {'quar.':>6}  masks"
    )
    reasons: dict[str, int] = {}
    for shard_dir in split_dirs(args.dir):
        m = read_manifest(shard_dir)
        counts = m["counts"]
        size = sum(s["size"] for s in m["shards"]) / 1e6
        print(
            f"{m['dataset'] + '/' + m['split']:28} {len(m['shards']):6d} {size:8.2f} {counts['videos']:7d} "
            f"{counts['frames']:7d} {counts['expressions']:6d} {counts['quarantined']:6d}  "
            f"{'yes' if m['has_masks'] else 'no'}"
        )
        for reason, count in counts["quarantine_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    print("quarantined items by reason:" + ("" if reasons else " none"))
    for reason, count in sorted(reasons.items()):
        print(f"  {reason:24} {count:6d}")
    return 0
