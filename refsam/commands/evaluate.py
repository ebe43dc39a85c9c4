"""``refsam evaluate``: score a checkpoint on one dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from refsam.commands._types import positive_int, probability
from refsam.errors import UserError


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="online inference + metrics on a dataset split (PNGs, metrics, submission zip)",
        description=(
            "Run CHECKPOINT over DATASET/SPLIT frame by frame and write to OUT: predictions/ "
            "(PNGs in the protocol's layout), metrics.json, per_sequence.csv, overlays/ of the "
            "worst sequences and submission.zip for server-scored splits."
        ),
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (.pt)")
    parser.add_argument("--dataset", required=True, help="e.g. ref-davis17, ref-youtube-vos, mevis")
    parser.add_argument("--split", required=True, help="e.g. valid")
    parser.add_argument(
        "--shards", type=Path, help="shards root (default: the checkpoint config's)"
    )
    parser.add_argument(
        "--heldout", type=Path, help="held-out GT root (demo: datasets/demo/heldout)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument(
        "--max-videos", type=positive_int, help="only the first N videos (quick look)"
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        help="mask probability threshold (default: the checkpoint config's eval.mask_threshold)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refsam.eval.families import evaluated_datasets

    known = evaluated_datasets()
    if args.dataset not in known:
        raise UserError(f"--dataset {args.dataset!r}: expected one of {', '.join(known)}")
    if not args.checkpoint.is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    if args.shards is not None and not args.shards.is_dir():
        raise UserError(f"--shards {args.shards}: no such directory")
    # the cheap checks passed: now torch (the device), then the model
    from refsam.eval.evaluator import evaluate
    from refsam.modeling.device import resolve_device

    resolve_device(args.device)
    result = evaluate(
        args.checkpoint, args.dataset, args.split, shards=args.shards, out=args.out,
        heldout=args.heldout, device=args.device, max_videos=args.max_videos,
        threshold=args.threshold,
    )  # fmt: skip
    shown = ("J&F", "J", "F", "mIoU", "oIoU")
    numbers = ", ".join(f"{k}={float(result.metrics[k]):.4f}" for k in shown if k in result.metrics)
    print(
        f"{args.dataset}/{args.split}: {numbers or 'no ground truth: predictions only'} "
        f"({result.frames} frames, {result.metrics.get('frames_per_s', 0):.1f} frames/s, "
        f"mask threshold {result.threshold:g})"
    )
    print(f"metrics: {result.metrics_json}")
    print(f"per sequence: {result.per_sequence_csv}")
    print(f"predictions: {result.predictions}")
    if result.submission is not None:
        print(f"submission: {result.submission}")
    for path in result.overlays:
        print(f"overlay: {path}")
    return 0
