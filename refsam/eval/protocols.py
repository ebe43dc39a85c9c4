"""Evaluation protocols over in-memory arrays: DAVIS (semi/unsupervised), Ref-DAVIS17, MeViS,
Ref-YouTube-VOS (local) and the RefCOCO family.

Every protocol takes an iterable of per-sequence (or per-expression) arrays, so the
evaluator can call it straight from model outputs and the CLI from PNG folders
(:mod:`refsam.eval.layouts`); it returns a :class:`ProtocolResult` with a summary dict and a
per-object / per-expression table.

DAVIS details, as in the DAVIS 2017 toolkit (``davis2017/evaluation.py``):

- GT objects are labels 1 … max label of the sequence (void 255 excluded); a label that
  never occurs is an object that is empty everywhere. (The toolkit takes the max of the
  first frame; the two agree when every object is in the first frame, as in DAVIS.)
- Semi-supervised: first and last frame dropped; a predicted label above the GT's objects
  is an error; missing objects are empty masks.
- Unsupervised: all frames; predicted objects 1 … max predicted label (at most 20), padded
  with empty ones to the GT count, matched to GT objects by Hungarian assignment maximising
  (mean J + mean F) / 2 of each pair.
- ``void="exclude"`` (default, DATA.md) leaves GT void pixels out of J and sets them to
  background before taking F boundaries. ``void="background"`` reproduces the released
  toolkit, whose reader turns void into background *before* it builds its void mask (so
  its void mask is always empty): use it to compare with numbers published from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from refsam.errors import UserError
from refsam.eval.io import VOID_LABEL
from refsam.eval.metrics import (
    BOUND_TH,
    boundary_parts,
    boundary_radius,
    count_per_frame,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    f_from_counts,
    region_counts,
    ris_summary,
)

VoidMode = Literal["exclude", "background"]
MAX_PROPOSALS = 20
FRAME_CHUNK = 16
"""Frames processed at once in :func:`pairwise_scores` (bounds memory on long videos)."""

SUMMARY_KEYS = ("J", "F", "J&F", "J_recall", "J_decay", "F_recall", "F_decay")


@dataclass
class ProtocolResult:
    """Outcome of one protocol run.

    Attributes:
        protocol: protocol name (``davis``, ``davis-semi``, ``ref-davis17``, ``mevis``, …).
        summary: the numbers printed by ``refsam score`` (values in 0–1).
        table: one row per object (DAVIS) / expression (MeViS, YTVOS) / sentence (RefCOCO).
        tables: further named tables (Ref-DAVIS17: one per annotation set).
    """

    protocol: str
    summary: dict[str, float | int | str]
    table: list[dict[str, object]]
    tables: dict[str, list[dict[str, object]]] = field(default_factory=dict)


def _object_stack(labels: np.ndarray, n_objects: int) -> np.ndarray:
    """O×T×H×W bool masks of labels 1 … n_objects from a T×H×W label map."""
    ids = np.arange(1, n_objects + 1, dtype=labels.dtype)
    return labels[None] == ids[:, None, None, None]


def pairwise_scores(
    gt_objects: np.ndarray,
    pred_objects: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of every (prediction, GT object) pair.

    Boundaries and tolerance dilations are computed once per object; pair matches are
    gathered at the boundary pixels only. Equal to calling ``db_eval_iou`` /
    ``db_eval_boundary`` on each pair.

    Args:
        gt_objects: G×T×H×W bool masks.
        pred_objects: P×T×H×W bool masks.
        void: optional T×H×W bool mask excluded from J and set to background for F.

    Returns:
        (J, F): float64 arrays of shape P×G×T.
    """
    n_gt, n_frames = gt_objects.shape[:2]
    n_pred = pred_objects.shape[0]
    j_all = np.zeros((n_pred, n_gt, n_frames))
    f_all = np.zeros((n_pred, n_gt, n_frames))
    radius = boundary_radius(*gt_objects.shape[2:], bound_th)
    for start in range(0, n_frames, FRAME_CHUNK):
        window = slice(start, min(start + FRAME_CHUNK, n_frames))
        gt = gt_objects[:, window]
        pred = pred_objects[:, window]
        valid = None if void is None else ~void[window]
        if valid is not None:
            gt, pred = gt & valid, pred & valid
        j_all[:, :, window], f_all[:, :, window] = _chunk_scores(gt, pred, radius)
    return j_all, f_all


def _chunk_scores(gt: np.ndarray, pred: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """J and F (P×G×t) for void-free G×t×H×W / P×t×H×W masks (void already removed)."""
    n_gt, t = gt.shape[:2]
    n_pred = pred.shape[0]
    gt_area = np.stack([count_per_frame(m) for m in gt]) if n_gt else np.zeros((0, t), np.int64)
    pred_area = (
        np.stack([count_per_frame(m) for m in pred]) if n_pred else np.zeros((0, t), np.int64)
    )
    inter = np.zeros((n_pred, n_gt, t), dtype=np.int64)
    for p in range(n_pred):
        for g in range(n_gt):
            if pred_area[p].any() and gt_area[g].any():
                inter[p, g] = count_per_frame(pred[p] & gt[g])
    union = pred_area[:, None] + gt_area[None] - inter
    j = np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    gt_parts = [boundary_parts(m, radius) for m in gt]
    pred_parts = [boundary_parts(m, radius) for m in pred]
    f = np.empty((n_pred, n_gt, t))
    for p, pp in enumerate(pred_parts):
        for g, gp in enumerate(gt_parts):
            f[p, g] = f_from_counts(pp.counts, gp.counts, gp.hits(pp), pp.hits(gp))
    return j, f


def _void_and_objects(
    gt_labels: np.ndarray, void: VoidMode
) -> tuple[np.ndarray | None, np.ndarray, int]:
    """(void mask or None, GT labels with void → 0, number of GT objects)."""
    void_mask = gt_labels == VOID_LABEL
    has_void = bool(void_mask.any())
    labels = np.where(void_mask, 0, gt_labels).astype(np.uint8) if has_void else gt_labels
    n_objects = int(labels.max()) if labels.size else 0
    if void == "background" or not has_void:
        return None, labels, n_objects
    return void_mask, labels, n_objects


def _check_pair(name: str, gt_labels: np.ndarray, pred_labels: np.ndarray) -> None:
    if gt_labels.shape != pred_labels.shape:
        raise UserError(
            f"{name}: prediction shape {pred_labels.shape} differs from ground truth "
            f"{gt_labels.shape} (frames×H×W)"
        )


def davis_sequence(
    name: str,
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    unsupervised: bool,
    void: VoidMode = "exclude",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of each GT object of one sequence (DAVIS protocol).

    Args:
        name: sequence name (for error messages).
        gt_labels: T×H×W uint8 label map (0 background, 255 void).
        pred_labels: T×H×W uint8 label map of the method.
        unsupervised: Hungarian matching over all frames; else semi-supervised (frames 1…T−2,
            labels must be GT objects).

    Returns:
        (J, F): float64 arrays G×T' (T' = T, or T − 2 for semi-supervised), GT object order.
    """
    _check_pair(name, gt_labels, pred_labels)
    void_mask, labels, n_gt = _void_and_objects(gt_labels, void)  # objects of all frames
    if not unsupervised:
        labels, pred_labels = labels[1:-1], pred_labels[1:-1]
        void_mask = None if void_mask is None else void_mask[1:-1]
    n_pred = int(pred_labels.max()) if pred_labels.size else 0
    if unsupervised and n_pred > MAX_PROPOSALS:
        raise UserError(
            f"{name}: prediction label {n_pred} exceeds the {MAX_PROPOSALS} proposals allowed"
        )
    if not unsupervised and n_pred > n_gt:
        raise UserError(
            f"{name}: prediction label {n_pred} but the ground truth has {n_gt} object(s)"
        )
    n_slots = max(n_pred, n_gt)
    if void_mask is not None:  # GT object masks never contain void (label 255); clear pred's
        pred_labels = np.where(void_mask, 0, pred_labels).astype(np.uint8)
    gt_objects = _object_stack(labels, n_gt)
    pred_objects = _object_stack(pred_labels, n_slots)
    j, f = pairwise_scores(gt_objects, pred_objects)
    if not unsupervised:
        idx = np.arange(n_gt)
        return j[idx, idx], f[idx, idx]
    if n_gt == 0:
        return np.zeros((0, j.shape[2])), np.zeros((0, j.shape[2]))
    pair_score = (j.mean(axis=2) + f.mean(axis=2)) / 2
    rows, cols = linear_sum_assignment(-pair_score)
    order = np.argsort(cols)
    return j[rows[order], cols[order]], f[rows[order], cols[order]]


def _object_row(name: str, obj: int, j: np.ndarray, f: np.ndarray) -> dict[str, object]:
    jm, jr, jd = db_statistics(j)
    fm, fr, fd = db_statistics(f)
    return {
        "sequence": name,
        "object": obj,
        "J": jm,
        "J_recall": jr,
        "J_decay": jd,
        "F": fm,
        "F_recall": fr,
        "F_decay": fd,
        "J&F": (jm + fm) / 2,
        "n_frames": int(j.size),
    }


def summarize(protocol: str, rows: Sequence[dict[str, object]]) -> dict[str, float | int | str]:
    """Means over objects/expressions; J&F = (mean J + mean F) / 2 (toolkit aggregation)."""
    summary: dict[str, float | int | str] = {"protocol": protocol}
    for key in ("J", "F", "J_recall", "J_decay", "F_recall", "F_decay"):
        values = np.array([float(row[key]) for row in rows], dtype=np.float64)  # type: ignore[arg-type]
        summary[key] = float(values.mean()) if values.size else math.nan
    summary["J&F"] = (float(summary["J"]) + float(summary["F"])) / 2
    summary["n_objects"] = len(rows)
    return {k: summary[k] for k in ("protocol", *SUMMARY_KEYS, "n_objects")}


DavisItem = tuple[str, np.ndarray, np.ndarray]
"""(sequence name, GT T×H×W label map, predicted T×H×W label map)."""


def davis(
    sequences: Iterable[DavisItem], *, unsupervised: bool = True, void: VoidMode = "exclude"
) -> ProtocolResult:
    """DAVIS 2017 protocol over sequences (unsupervised by default, else semi-supervised)."""
    rows: list[dict[str, object]] = []
    for name, gt_labels, pred_labels in sequences:
        j, f = davis_sequence(name, gt_labels, pred_labels, unsupervised=unsupervised, void=void)
        rows.extend(_object_row(name, g + 1, j[g], f[g]) for g in range(len(j)))
    protocol = "davis" if unsupervised else "davis-semi"
    return ProtocolResult(protocol, summarize(protocol, rows), rows)


def ref_davis17(
    annotation_sets: Sequence[Iterable[DavisItem]], *, void: VoidMode = "exclude"
) -> ProtocolResult:
    """Ref-DAVIS17: each annotation set scored with the unsupervised protocol.

    The summary is the mean of the per-set summaries (the reported number); ``table`` has
    one row per set and ``tables["anno_<i>"]`` the per-object rows of set ``i``.
    """
    per_set = [davis(items, unsupervised=True, void=void) for items in annotation_sets]
    if not per_set:
        raise UserError("ref-davis17: no annotation set to score")
    summary: dict[str, float | int | str] = {"protocol": "ref-davis17"}
    for key in SUMMARY_KEYS:
        summary[key] = float(np.mean([float(r.summary[key]) for r in per_set]))
    summary["n_objects"] = int(per_set[0].summary["n_objects"])
    summary["n_sets"] = len(per_set)
    table = []
    for index, result in enumerate(per_set):
        table.append({"set": f"anno_{index}", **{k: result.summary[k] for k in SUMMARY_KEYS}})
    tables = {f"anno_{i}": r.table for i, r in enumerate(per_set)}
    return ProtocolResult("ref-davis17", summary, table, tables)


def label_map_from_probs(
    probs: np.ndarray,
    labels: Sequence[int] | None = None,
    *,
    threshold: float = 0.5,
    background: float = 0.1,
) -> np.ndarray:
    """Merge per-object probabilities into one label map (Ref-DAVIS17 convention).

    Probabilities below ``threshold`` are zeroed, a constant ``background`` score is put in
    front and the argmax taken (ties go to the earlier entry, background first).

    Args:
        probs: N×… float array (N objects; e.g. N×H×W or N×T×H×W).
        labels: label written for each object (default 1 … N).

    Returns:
        uint8 array of shape ``probs.shape[1:]``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    labels = list(range(1, len(probs) + 1)) if labels is None else list(labels)
    if len(labels) != len(probs) or any(not 0 < v < 256 for v in labels):
        raise ValueError("labels must give one value in 1…255 per object")
    kept = np.where(probs >= threshold, probs, 0.0)
    scores = np.concatenate([np.full((1, *probs.shape[1:]), background, np.float32), kept])
    lookup = np.array([0, *labels], dtype=np.uint8)
    return lookup[np.argmax(scores, axis=0)]


ExpressionItem = tuple[str, str, np.ndarray, np.ndarray | None]
"""(video, expression id, GT T×H×W mask, predicted T×H×W mask or None when missing)."""


def expressions(protocol: str, items: Iterable[ExpressionItem]) -> ProtocolResult:
    """Per-expression J and F over all listed frames, averaged over expressions (MeViS script;
    also used for local Ref-YouTube-VOS scoring). A missing prediction scores 0."""
    rows: list[dict[str, object]] = []
    n_missing = 0
    for video, exp_id, gt, pred in items:
        if pred is None:
            n_missing += 1
            j = f = np.zeros(len(gt))
        else:
            if gt.shape != pred.shape:
                raise UserError(
                    f"{video}/{exp_id}: prediction shape {pred.shape} differs from ground "
                    f"truth {gt.shape} (frames×H×W)"
                )
            j = np.atleast_1d(db_eval_iou(gt, pred))
            f = np.atleast_1d(db_eval_boundary(gt, pred))
        row = _object_row(video, 0, j, f)
        del row["sequence"], row["object"]
        rows.append({"video": video, "exp_id": exp_id, **row, "missing": pred is None})
    summary = summarize(protocol, rows)
    summary["n_expressions"] = len(rows)
    summary["n_missing"] = n_missing
    return ProtocolResult(protocol, summary, rows)


def mevis(items: Iterable[ExpressionItem]) -> ProtocolResult:
    """MeViS: GT = union of the expression's objects; see :func:`expressions`."""
    return expressions("mevis", items)


def ytvos(items: Iterable[ExpressionItem]) -> ProtocolResult:
    """Ref-YouTube-VOS local scoring (held-out demo GT); see :func:`expressions`."""
    return expressions("ytvos", items)


SentenceItem = tuple[str, np.ndarray, np.ndarray]
"""(sentence id, GT H×W mask, predicted H×W mask)."""


def refcoco(items: Iterable[SentenceItem]) -> ProtocolResult:
    """RefCOCO family: per-sentence IoU (0 when the union is empty), mIoU, oIoU, prec@X."""
    rows: list[dict[str, object]] = []
    for sent_id, gt, pred in items:
        if gt.shape != pred.shape:
            raise UserError(
                f"sentence {sent_id}: prediction size {pred.shape} differs from GT {gt.shape}"
            )
        inter, union = region_counts(gt, pred)
        i, u = int(inter[0]), int(union[0])
        rows.append({"sent_id": sent_id, "I": i, "U": u, "IoU": i / u if u else 0.0})
    summary: dict[str, float | int | str] = {"protocol": "refcoco"}
    summary.update(ris_summary(np.array([r["I"] for r in rows]), np.array([r["U"] for r in rows])))
    return ProtocolResult("refcoco", summary, rows)
