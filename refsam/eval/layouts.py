"""Directory-based scoring: read PNG folders and feed :mod:`refsam.eval.protocols`
(``refsam score --pred … --gt … --protocol …``).

- ``davis`` / ``davis-semi`` (here): ``<dir>/<seq>/<frame>.png`` label maps on both sides.
  ``--gt`` may also be a DAVIS or Ref-DAVIS root (``Annotations_unsupervised/480p`` is used,
  and the sequences of ``ImageSets/2017/val.txt`` unless ``sequences`` is given).
- every other protocol is a dataset family's folder scorer
  (:func:`refsam.eval.families.folder_protocols`; e.g. ``ref-davis17``, ``mevis``,
  ``ytvos``, ``refcoco``), described in its module under :mod:`refsam.eval.families`.

Frames are matched by file name; every missing file or wrong size is a
:class:`~refsam.errors.UserError` naming the file. The helpers below are shared by the
families' folder readers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.families import FolderOptions, folder_protocols
from refsam.eval.io import VOID_LABEL, list_pngs, read_png_stack
from refsam.eval.protocols import MAX_PROPOSALS, ProtocolResult, VoidMode
from refsam.storage import as_path

DAVIS_PROTOCOLS = ("davis", "davis-semi")


def progress(items: Sequence[Any], desc: str) -> Iterator[Any]:
    """tqdm on stderr, shown only on a terminal and for more than a handful of items."""
    return iter(tqdm(items, desc=desc, unit="item", disable=None if len(items) > 3 else True))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}") from None


def resolve_davis_gt(gt: Path, sequences: Sequence[str] | None) -> tuple[Path, list[str]]:
    """The annotation folder and the sequences to score.

    ``gt`` is an annotation folder (``<seq>/<frame>.png``) or a DAVIS / Ref-DAVIS root; for a
    root the sequences default to ``ImageSets/2017/val.txt``.
    """
    gt = require_dir(as_path(gt), "ground-truth")
    for root in (gt / "DAVIS", gt):
        annotations = root / "Annotations_unsupervised" / "480p"
        if annotations.is_dir():
            if sequences is None and (root / "ImageSets/2017/val.txt").is_file():
                text = (root / "ImageSets/2017/val.txt").read_text(encoding="utf-8")
                sequences = [line.strip() for line in text.splitlines() if line.strip()]
            gt = annotations
            break
    names = (
        list(sequences)
        if sequences is not None
        else sorted(p.name for p in gt.iterdir() if p.is_dir())
    )
    if not names:
        raise UserError(f"{gt}: no sequence folders to score")
    for name in names:
        require_dir(gt / name, f"ground-truth sequence {name!r}")
    return gt, names


def frame_paths(pred_seq: Path, frames: Sequence[str]) -> list[Path]:
    paths = [pred_seq / f"{frame}.png" for frame in frames]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{missing[0]}: prediction frame missing{more}")
    return paths


def _check_labels(paths: Sequence[Path], labels: np.ndarray, limit: int, why: str) -> None:
    """Name the first prediction file with a label above ``limit``."""
    over = np.flatnonzero(labels.reshape(len(labels), -1).max(axis=1) > limit)
    if over.size:
        frame = int(over[0])
        raise UserError(f"{paths[frame]}: label {int(labels[frame].max())} but {why}")


def iter_davis(
    pred: Path, gt: Path, sequences: Sequence[str], *, unsupervised: bool
) -> Iterator[protocols.DavisItem]:
    """(sequence, GT labels, predicted labels) for each sequence, checked frame by frame."""
    for name in progress(list(sequences), "sequences"):
        frames = list_pngs(gt / name)
        if not frames:
            raise UserError(f"{gt / name}: no ground-truth PNG frames")
        gt_labels = read_png_stack([gt / name / f"{f}.png" for f in frames])
        require_dir(as_path(pred) / name, "prediction sequence")
        paths = frame_paths(as_path(pred) / name, frames)
        pred_labels = read_png_stack(paths, size=gt_labels.shape[1:])
        if unsupervised:
            _check_labels(paths, pred_labels, MAX_PROPOSALS, f"at most {MAX_PROPOSALS} allowed")
        else:
            n_gt = int(np.where(gt_labels == VOID_LABEL, 0, gt_labels).max())
            _check_labels(
                paths[1:-1], pred_labels[1:-1], n_gt, f"the ground truth has {n_gt} object(s)"
            )
        yield name, gt_labels, pred_labels


def score_davis(
    pred: Path,
    gt: Path,
    *,
    unsupervised: bool = True,
    sequences: Sequence[str] | None = None,
    void: VoidMode = "exclude",
) -> ProtocolResult:
    """DAVIS 2017 unsupervised (``davis``) or semi-supervised (``davis-semi``) from folders."""
    gt, names = resolve_davis_gt(gt, sequences)
    require_dir(as_path(pred), "prediction")
    items = iter_davis(pred, gt, names, unsupervised=unsupervised)
    return protocols.davis(items, unsupervised=unsupervised, void=void)


def decode_coco_rle(rle: dict[str, Any], where: str) -> np.ndarray:
    """H×W bool mask of a COCO RLE read from a JSON file (``where`` names it in errors)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            coded = mask_utils.frPyObjects(rle, height, width)
        else:
            coded = {
                "size": [height, width],
                "counts": counts.encode() if isinstance(counts, str) else counts,
            }
        return mask_utils.decode(coded).astype(bool)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: bad COCO RLE ({exc})") from None


def protocol_names() -> list[str]:
    """Every ``refsam score`` protocol: the DAVIS ones and each family's folder protocol."""
    return [*DAVIS_PROTOCOLS, *sorted(folder_protocols())]


def score_dirs(
    protocol: str,
    pred: Path,
    gt: Path,
    *,
    sequences: Sequence[str] | None = None,
    meta: Path | None = None,
    void: VoidMode = "exclude",
) -> ProtocolResult:
    """Score with the protocol called ``protocol`` (the ``refsam score`` entry point)."""
    if protocol in DAVIS_PROTOCOLS:
        return score_davis(
            pred, gt, unsupervised=protocol == "davis", sequences=sequences, void=void
        )
    scorers = folder_protocols()
    if protocol not in scorers:
        raise UserError(
            f"unknown protocol {protocol!r}; expected one of {', '.join(protocol_names())}"
        )
    return scorers[protocol](
        as_path(pred), as_path(gt), FolderOptions(sequences=sequences, meta=meta, void=void)
    )
