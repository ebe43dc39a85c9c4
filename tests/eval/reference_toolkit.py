"""A straightforward, frame-by-frame transcription of the DAVIS 2017 toolkit semantics.

Used only as a test oracle for the vectorised :mod:`refsam.eval.metrics` and
:mod:`refsam.eval.protocols`. Written from the toolkit's published definitions
(davis2017-evaluation: ``metrics.py`` db_eval_iou / f_measure / _seg2bmap,
``utils.db_statistics``, ``evaluation.py`` semi/unsupervised), with plain loops and
scipy's binary dilation instead of OpenCV so it shares no code path with the library.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.optimize import linear_sum_assignment


def iou_frame(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    gt, pred = gt.astype(bool), pred.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    inter = np.sum(gt & pred & keep)
    union = np.sum((gt | pred) & keep)
    return 1.0 if union == 0 else inter / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel: boundary when differing from right, bottom or bottom-right neighbour;
    last row looks right only, last column down only, corner never."""
    seg = seg.astype(bool)
    h, w = seg.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                out[y, x] = seg[y, x] != seg[y, x + 1]
            elif x == w - 1:
                out[y, x] = seg[y, x] != seg[y + 1, x]
            else:
                out[y, x] = (
                    seg[y, x] != seg[y, x + 1]
                    or seg[y, x] != seg[y + 1, x]
                    or seg[y, x] != seg[y + 1, x + 1]
                )
    return out


def disk(radius: int) -> np.ndarray:
    out = np.zeros((2 * radius + 1, 2 * radius + 1), dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out[dy + radius, dx + radius] = dx * dx + dy * dy <= radius * radius
    return out


def f_frame(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    radius = math.ceil(0.008 * math.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))
    fg_b = seg2bmap(pred.astype(bool) & keep)
    gt_b = seg2bmap(gt.astype(bool) & keep)
    fg_dil = binary_dilation(fg_b, structure=disk(radius))
    gt_dil = binary_dilation(gt_b, structure=disk(radius))
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_b & gt_dil) / n_fg
        recall = np.sum(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    # NumPy 1 (the toolkit's era) promoted ``ids[i + 1] + 1`` past 255; NumPy 2 keeps uint8
    # and wraps 255 + 1 to 0, so widen after the toolkit's cast to keep its semantics.
    ids = ids.astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def per_frame(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None, fn) -> np.ndarray:
    return np.array([fn(gt[t], pred[t], None if void is None else void[t]) for t in range(len(gt))])


def davis_sequence(
    gt_labels: np.ndarray, pred_labels: np.ndarray, *, unsupervised: bool, void_excluded: bool
) -> tuple[np.ndarray, np.ndarray]:
    """G×T' per-frame J and F in GT object order (toolkit evaluation.py semantics)."""
    # the toolkit counts GT objects in the first frame, before dropping it (semi-supervised)
    n_gt = int(np.where(gt_labels[0] == 255, 0, gt_labels[0]).max())
    if not unsupervised:
        gt_labels, pred_labels = gt_labels[1:-1], pred_labels[1:-1]
    void = gt_labels == 255
    gt_labels = np.where(void, 0, gt_labels)
    void = void if void_excluded else None
    n_pred = max(int(pred_labels.max()), n_gt)
    gt_objs = [gt_labels == g for g in range(1, n_gt + 1)]
    pred_objs = [pred_labels == p for p in range(1, n_pred + 1)]
    if not unsupervised:
        j = np.array([per_frame(gt_objs[g], pred_objs[g], void, iou_frame) for g in range(n_gt)])
        f = np.array([per_frame(gt_objs[g], pred_objs[g], void, f_frame) for g in range(n_gt)])
        return j, f
    j = np.zeros((n_pred, n_gt, len(gt_labels)))
    f = np.zeros_like(j)
    for g in range(n_gt):
        for p in range(n_pred):
            j[p, g] = per_frame(gt_objs[g], pred_objs[p], void, iou_frame)
            f[p, g] = per_frame(gt_objs[g], pred_objs[p], void, f_frame)
    rows, cols = linear_sum_assignment(-((j.mean(axis=2) + f.mean(axis=2)) / 2))
    out_j, out_f = np.zeros((n_gt, len(gt_labels))), np.zeros((n_gt, len(gt_labels)))
    for r, c in zip(rows, cols, strict=True):
        out_j[c], out_f[c] = j[r, c], f[r, c]
    return out_j, out_f
