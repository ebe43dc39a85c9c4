"""Directory-based wrappers: read the standard PNG layouts and feed :mod:`refsam.eval.protocols`.

Layouts (``--pred`` / ``--gt`` of ``refsam score``):

- ``davis`` / ``davis-semi``: ``<dir>/<seq>/<frame>.png`` label maps on both sides. ``--gt``
  may also be a DAVIS or Ref-DAVIS root (``Annotations_unsupervised/480p`` is used, and the
  sequences of ``ImageSets/2017/val.txt`` unless ``sequences`` is given).
- ``ref-davis17``: ``--pred`` holds ``anno_0 … anno_3``, each ``<seq>/<frame>.png``.
- ``mevis``: ``--gt`` a split folder (``meta_expressions.json`` + ``mask_dict.json``),
  ``--pred`` ``<vid>/<exp_id>/<frame>.png``; missing video/expression folders score 0.
- ``ytvos``: ``--gt`` a folder with ``Annotations/<vid>/<frame>.png`` (palette) and the
  split's ``meta_expressions.json`` (or ``meta``); ``--pred``
  ``[Annotations/]<vid>/<exp_id>/<frame>.png``. Only videos with a GT folder are scored.
- ``refcoco``: ``<dir>/<sent_id>.png`` binary masks at original image size on both sides.

Frames are matched by file name; every missing file or wrong size is a
:class:`~refsam.errors.UserError` naming the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.io import VOID_LABEL, list_pngs, read_png, read_png_stack
from refsam.eval.protocols import MAX_PROPOSALS, ProtocolResult, VoidMode

log = logging.getLogger(__name__)
PROTOCOLS = ("davis", "davis-semi", "ref-davis17", "mevis", "ytvos", "refcoco")
N_REF_DAVIS_SETS = 4


def _progress(items: Sequence[Any], desc: str) -> Iterator[Any]:
    """tqdm on stderr, shown only on a terminal and for more than a handful of items."""
    return iter(tqdm(items, desc=desc, unit="item", disable=None if len(items) > 3 else True))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found")
    return path


def _read_json(path: Path) -> Any:
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
    gt = _require_dir(Path(gt), "ground-truth")
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
        _require_dir(gt / name, f"ground-truth sequence {name!r}")
    return gt, names


def _pred_paths(pred_seq: Path, frames: Sequence[str]) -> list[Path]:
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
    for name in _progress(list(sequences), "sequences"):
        frames = list_pngs(gt / name)
        if not frames:
            raise UserError(f"{gt / name}: no ground-truth PNG frames")
        gt_labels = read_png_stack([gt / name / f"{f}.png" for f in frames])
        _require_dir(Path(pred) / name, "prediction sequence")
        paths = _pred_paths(Path(pred) / name, frames)
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
    _require_dir(Path(pred), "prediction")
    items = iter_davis(pred, gt, names, unsupervised=unsupervised)
    return protocols.davis(items, unsupervised=unsupervised, void=void)


def score_ref_davis17(
    pred: Path, gt: Path, *, sequences: Sequence[str] | None = None, void: VoidMode = "exclude"
) -> ProtocolResult:
    """Ref-DAVIS17: ``pred/anno_0 … anno_3`` each scored with the unsupervised protocol."""
    gt, names = resolve_davis_gt(gt, sequences)
    sets = [Path(pred) / f"anno_{i}" for i in range(N_REF_DAVIS_SETS)]
    for folder in sets:
        _require_dir(folder, "annotation-set prediction (expected anno_0 … anno_3)")
    return protocols.ref_davis17(
        [iter_davis(folder, gt, names, unsupervised=True) for folder in sets], void=void
    )


def _decode_rle(rle: dict[str, Any], where: str) -> np.ndarray:
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


def _frame_size(video: dict[str, Any], masks: dict[str, Any]) -> tuple[int, int] | None:
    """(H, W) of a video from the first non-empty RLE of any of its expressions."""
    for expression in video["expressions"].values():
        for anno_id in expression.get("anno_id", []):
            for rle in masks.get(str(anno_id)) or []:
                if rle:
                    return int(rle["size"][0]), int(rle["size"][1])
    return None


def _jpeg_size(folder: Path, frames: Sequence[str]) -> tuple[int, int] | None:
    """(H, W) of the first listed frame image, when the split folder has it."""
    path = folder / f"{frames[0]}.jpg" if frames else None
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except (OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: unreadable frame image ({exc})") from None


def iter_mevis(pred: Path, gt: Path) -> Iterator[protocols.ExpressionItem]:
    """(video, exp_id, GT union T×H×W, prediction or None) for every expression of a split."""
    meta = _read_json(gt / "meta_expressions.json")
    masks = _read_json(gt / "mask_dict.json")
    try:
        videos: dict[str, Any] = meta["videos"]
    except (KeyError, TypeError):
        raise UserError(f"{gt / 'meta_expressions.json'}: expected {{'videos': {{...}}}}") from None
    for name in _progress(sorted(videos), "videos"):
        video = videos[name]
        frames = list(video["frames"])
        size = _frame_size(video, masks) or _jpeg_size(gt / "JPEGImages" / name, frames)
        for exp_id, expression in video["expressions"].items():
            exp_dir = Path(pred) / name / str(exp_id)
            pred_masks = None
            if exp_dir.is_dir():
                paths = _pred_paths(exp_dir, frames)
                pred_masks = read_png_stack(paths, size=size) > 0
                size = size or pred_masks.shape[1:]
            else:
                log.warning("%s: no prediction folder, expression scored 0", exp_dir)
            if size is None:
                raise UserError(f"{gt}/mask_dict.json: no mask gives the size of video {name}")
            union = np.zeros((len(frames), *size), dtype=bool)
            for anno_id in expression["anno_id"]:
                key = str(anno_id)
                if key not in masks:
                    raise UserError(f"{gt}/mask_dict.json: no masks for anno_id {key}")
                for index, rle in enumerate(masks[key][: len(frames)]):
                    if rle:
                        union[index] |= _decode_rle(rle, f"{gt}/mask_dict.json[{key}][{index}]")
            yield name, str(exp_id), union, pred_masks


def score_mevis(pred: Path, gt: Path) -> ProtocolResult:
    """MeViS from folders (``valid_u`` or held-out ``valid``)."""
    _require_dir(Path(gt), "ground-truth split")
    _require_dir(Path(pred), "prediction")
    return protocols.mevis(iter_mevis(Path(pred), Path(gt)))


def iter_ytvos(pred: Path, gt: Path, meta_file: Path) -> Iterator[protocols.ExpressionItem]:
    """(video, exp_id, GT T×H×W of the expression's object, prediction) per expression."""
    annotations = gt / "Annotations" if (gt / "Annotations").is_dir() else gt
    pred_root = pred / "Annotations" if (pred / "Annotations").is_dir() else pred
    meta = _read_json(meta_file)
    try:
        videos: dict[str, Any] = meta["videos"]
    except (KeyError, TypeError):
        raise UserError(f"{meta_file}: expected {{'videos': {{...}}}}") from None
    scored = [v for v in sorted(videos) if (annotations / v).is_dir()]
    if not scored:
        raise UserError(f"{annotations}: no ground-truth folder for any video of {meta_file}")
    if len(scored) < len(videos):
        log.info(
            "ytvos: %d of %d videos have ground truth; scoring those", len(scored), len(videos)
        )
    for name in _progress(scored, "videos"):
        frames = list(videos[name]["frames"])
        gt_labels = read_png_stack(_pred_paths(annotations / name, frames))
        for exp_id, expression in videos[name]["expressions"].items():
            obj_id = int(expression["obj_id"])
            exp_dir = pred_root / name / str(exp_id)
            _require_dir(exp_dir, "prediction expression")
            pred_masks = read_png_stack(_pred_paths(exp_dir, frames), size=gt_labels.shape[1:])
            yield name, str(exp_id), gt_labels == obj_id, pred_masks > 0


def score_ytvos(pred: Path, gt: Path, meta: Path | None = None) -> ProtocolResult:
    """Ref-YouTube-VOS local scoring; ``meta`` defaults to ``gt/meta_expressions.json``."""
    _require_dir(Path(gt), "ground-truth")
    _require_dir(Path(pred), "prediction")
    meta_file = Path(meta) if meta is not None else Path(gt) / "meta_expressions.json"
    return protocols.ytvos(iter_ytvos(Path(pred), Path(gt), meta_file))


def iter_refcoco(pred: Path, gt: Path) -> Iterator[protocols.SentenceItem]:
    names = list_pngs(gt)
    if not names:
        raise UserError(f"{gt}: no <sent_id>.png ground-truth masks")
    for name in _progress(names, "sentences"):
        gt_mask = read_png(gt / f"{name}.png") > 0
        pred_file = pred / f"{name}.png"
        if not pred_file.is_file():
            raise UserError(f"{pred_file}: prediction mask missing")
        pred_mask = read_png(pred_file) > 0
        if pred_mask.shape != gt_mask.shape:
            raise UserError(
                f"{pred_file}: size {pred_mask.shape[1]}x{pred_mask.shape[0]}, expected "
                f"{gt_mask.shape[1]}x{gt_mask.shape[0]} (WxH)"
            )
        yield name, gt_mask, pred_mask


def score_refcoco(pred: Path, gt: Path) -> ProtocolResult:
    """RefCOCO family from ``<sent_id>.png`` folders."""
    _require_dir(Path(gt), "ground-truth")
    _require_dir(Path(pred), "prediction")
    return protocols.refcoco(iter_refcoco(Path(pred), Path(gt)))


def score_dirs(
    protocol: str,
    pred: Path,
    gt: Path,
    *,
    sequences: Sequence[str] | None = None,
    meta: Path | None = None,
    void: VoidMode = "exclude",
) -> ProtocolResult:
    """Dispatch on the protocol name (the ``refsam score`` entry point)."""
    if protocol in ("davis", "davis-semi"):
        return score_davis(
            pred, gt, unsupervised=protocol == "davis", sequences=sequences, void=void
        )
    if protocol == "ref-davis17":
        return score_ref_davis17(pred, gt, sequences=sequences, void=void)
    if protocol == "mevis":
        return score_mevis(pred, gt)
    if protocol == "ytvos":
        return score_ytvos(pred, gt, meta)
    if protocol == "refcoco":
        return score_refcoco(pred, gt)
    raise UserError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
