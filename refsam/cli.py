"""The ``refsam`` console script: parse arguments, call library code, map errors.

Error contract (ARCHITECTURE.md): bad input (a path, name, key or value) raises
:class:`~refsam.errors.UserError` and exits 2 with one line; any other failure exits 1.
``--debug`` shows the traceback. Each subcommand lives in ``refsam/commands/<name>.py``
and exposes ``register(subparsers)``; add its module name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Any

from refsam import __version__
from refsam.errors import UserError, did_you_mean

COMMANDS = [
    "demo_data",
    "runs",
    "model",
    "score",
    "ingest",
    "shards",
    "pipeline",
    "train",
    "evaluate",
    "predict",
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's check, plus a did-you-mean for a mistyped subcommand or choice."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            hint = did_you_mean(str(value), action.choices or ()) if action.choices else ""
            raise argparse.ArgumentError(action, f"{exc.message}{hint}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refsam", description="RefSAM referring video object segmentation pipeline."
    )
    parser.add_argument("--version", action="version", version=f"refsam {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"refsam.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        result = args.func(args)
        return int(result or 0)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"refsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refsam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure while running: exit 1
        if debug:
            traceback.print_exc()
        print(
            f"refsam: failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
