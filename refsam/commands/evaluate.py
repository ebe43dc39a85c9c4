"""``refsam evaluate``: score a checkpoint on one dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from refsam.commands._types import add_model_source, positive_int, probability
from refsam.errors import UserError, did_you_mean
from refsam.paths import not_found_message
from refsam.storage import as_path


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="online inference + metrics on a dataset split (PNGs, metrics, submission zip)",
        description=(
            "Run a checkpoint (--checkpoint FILE, or --model models:/refsam@champion) over "
            "DATASET/SPLIT frame by frame and write to OUT: predictions/ "
            "(PNGs in the protocol's layout), metrics.json, per_sequence.csv, overlays/ of the "
            "worst sequences and submission.zip for server-scored splits."
        ),
    )
    add_model_source(parser)
    parser.add_argument("--dataset", required=True, help="e.g. ref-davis17, ref-youtube-vos, mevis")
    parser.add_argument("--split", required=True, help="e.g. valid (the dataset's splits)")
    parser.add_argument(
        "--shards", type=as_path, help="shards root (default: the checkpoint config's)"
    )
    parser.add_argument(
        "--heldout", type=as_path, help="held-out GT root (demo: datasets/demo/heldout)"
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


def check_split(dataset: str, split: str) -> None:
    """UserError naming the dataset's splits unless ``split`` is one of them."""
    from refsam.data.sources import source_class

    splits = source_class(dataset).splits
    if split not in splits:
        raise UserError(
            f"--split {split!r}: {dataset} has the splits {', '.join(splits)}"
            f"{did_you_mean(split, splits)}"
        )


def run(args: argparse.Namespace) -> int:
    from refsam.eval.families import evaluated_datasets

    known = evaluated_datasets()
    if args.dataset not in known:
        raise UserError(
            f"--dataset {args.dataset!r}: expected one of {', '.join(known)}"
            f"{did_you_mean(args.dataset, known)}"
        )
    check_split(args.dataset, args.split)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError("--checkpoint " + not_found_message(args.checkpoint))
    if args.shards is not None and not args.shards.is_dir():
        raise UserError(f"--shards {args.shards}: no such directory")
    # the cheap checks passed: now torch (the device), then the model
    from refsam.modeling.device import resolve_device

    resolve_device(args.device)
    checkpoint = args.checkpoint
    if args.model is not None:
        from refsam.tracking import resolve_model_uri

        checkpoint = resolve_model_uri(args.model)
    from refsam.eval.evaluator import evaluate

    result = evaluate(
        checkpoint, args.dataset, args.split, shards=args.shards, out=args.out,
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
    subsets = [k.removeprefix("n/") for k in result.metrics if k.startswith("n/")]
    if subsets:
        print("subsets: " + ", ".join(_subset_text(result.metrics, name) for name in subsets))
    print(f"metrics: {result.metrics_json}")
    print(f"per sequence: {result.per_sequence_csv}")
    print(f"predictions: {result.predictions}")
    if result.submission is not None:
        print(f"submission: {result.submission}")
    for path in result.overlays:
        print(f"overlay: {path}")
    return 0


def _subset_text(metrics: dict[str, float | int | str], name: str) -> str:
    """``motion J&F=0.4123 (n=23)`` (no J&F when no row of the subset was scored)."""
    score = metrics.get(f"J&F/{name}")
    shown = f" J&F={float(score):.4f}" if score is not None else ""
    return f"{name}{shown} (n={metrics[f'n/{name}']})"
