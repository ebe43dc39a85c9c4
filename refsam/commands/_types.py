"""argparse value types shared by the subcommands (argparse names the option in the error)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer > 0; anything else is a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a mask threshold); else exit 2."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a value in (0, 1), got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (e.g. a frame rate); anything else is exit 2."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint FILE`` or ``--model URI`` (exactly one): the model a command runs."""
    from pathlib import Path

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt)")
    source.add_argument(
        "--model",
        help="registered model, e.g. models:/refsam@champion or models:/refsam/3 (MLflow store "
        "from MLFLOW_TRACKING_URI or the project's mlruns/)",
    )
