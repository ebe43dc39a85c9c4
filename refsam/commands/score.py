"""``refsam score``: score any method's masks in the standard layouts.

Prints one JSON object on stdout (DAVIS-style protocols: protocol, J, F, J&F, J_recall,
J_decay, F_recall, F_decay, n_objects, values in 0–1; ``refcoco``: mIoU, oIoU, prec@0.5 …
prec@0.9, n_sentences) and, with ``--out``, writes the per-object / per-expression tables
as CSV plus ``summary.json``. Layouts are described in :mod:`refsam.eval.layouts`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from refsam.errors import UserError
from refsam.eval.layouts import protocol_names, score_dirs
from refsam.eval.protocols import ProtocolResult
from refsam.fsio import atomic_write_json, write_csv
from refsam.storage import as_path


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand."""
    parser = subparsers.add_parser(
        "score",
        help="score predicted masks against ground truth (DAVIS, Ref-DAVIS17, MeViS, ...)",
        description=(
            "Score a method's masks (palette or 0/255 PNGs, frames matched by name) with the "
            "reference protocols and print one JSON object. Layouts: davis/davis-semi "
            "<seq>/<frame>.png label maps (GT: DAVIS Annotations_unsupervised layout or a "
            "DAVIS root); ref-davis17 PRED/anno_0..anno_3/<seq>/<frame>.png; mevis GT split "
            "folder with meta_expressions.json + mask_dict.json, PRED <vid>/<exp_id>/<frame>.png; "
            "ytvos GT folder with Annotations/<vid>/<frame>.png (+ --meta), PRED "
            "[Annotations/]<vid>/<exp_id>/<frame>.png; refcoco <sent_id>.png on both sides."
        ),
    )
    parser.add_argument("--pred", type=as_path, required=True, help="predicted masks folder")
    parser.add_argument("--gt", type=as_path, required=True, help="ground-truth folder")
    parser.add_argument(
        "--protocol", required=True, choices=protocol_names(), help="scoring protocol"
    )
    parser.add_argument("--out", type=Path, help="write per-item CSV tables and summary.json here")
    parser.add_argument(
        "--meta",
        type=as_path,
        help="ytvos: the split's meta_expressions.json (default GT/meta_expressions.json)",
    )
    parser.add_argument(
        "--sequences",
        help="davis protocols: a text file with one sequence per line, or NAME,NAME,... "
        "(default: ImageSets/2017/val.txt for a DAVIS root, else every GT sequence)",
    )
    parser.add_argument(
        "--void",
        choices=("exclude", "background"),
        default="exclude",
        help="davis protocols: exclude GT void pixels (default) or treat them as background "
        "like the released DAVIS toolkit",
    )
    parser.set_defaults(func=run)


def _sequences(value: str | None) -> list[str] | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        names = [part.strip() for part in value.split(",")]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"--sequences {value!r}: no sequence names")
    return names


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_tables(out: Path, result: ProtocolResult) -> None:
    """``<out>/<protocol>.csv`` (+ ``<protocol>_<name>.csv`` per extra table), summary.json."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    tables = {result.protocol: result.table}
    tables.update({f"{result.protocol}_{name}": rows for name, rows in result.tables.items()})
    for name, rows in tables.items():
        if rows:  # an empty table writes no file
            write_csv(out / f"{name}.csv", rows)
    atomic_write_json(out / "summary.json", {k: _json_value(v) for k, v in result.summary.items()})


def run(args: argparse.Namespace) -> int:
    """Score, print the summary as one JSON line, write tables when ``--out`` is given."""
    result = score_dirs(
        args.protocol,
        args.pred,
        args.gt,
        sequences=_sequences(args.sequences),
        meta=args.meta,
        void=args.void,
    )
    if args.out is not None:
        write_tables(args.out, result)
    print(json.dumps({k: _json_value(v) for k, v in result.summary.items()}))
    return 0
