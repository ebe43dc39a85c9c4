"""DAVIS-style video segmentation metrics, vectorised over frames.

Same numbers as the DAVIS 2017 evaluation toolkit (``davis2017/metrics.py``:
``db_eval_iou``, ``db_eval_boundary``/``f_measure``/``_seg2bmap``; ``utils.db_statistics``)
and therefore as the MeViS script, which reuses them. Differences are only in how the work
is done: every function takes a whole T×H×W stack, boundary maps are built with array
shifts inside the object's bounding box, the tolerance disk is applied once per object (not
once per frame and pair) by a single OpenCV dilation over all frames stacked with gaps, and
boundary matches are counted at the boundary pixels only.

Conventions (DATA.md "Metrics"):

- J (region IoU) per frame, void pixels excluded; both masks empty → 1.
- F (boundary F-measure): boundary maps by the toolkit's ``seg2bmap`` (a pixel is boundary
  when it differs from its right, bottom or bottom-right neighbour; outside the image is not
  background), void pixels set to background first, tolerance ``r = ceil(0.008 · diag)``
  with a disk ``{x² + y² ≤ r²}``, no thinning. Neither boundary → 1, exactly one → 0.
- Statistics per object: mean, recall = mean(J > 0.5) (strict), decay = mean of the first
  minus mean of the last of four overlapping bins, binned exactly as the toolkit does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUND_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (toolkit default)."""

N_DECAY_BINS = 4
TOOLKIT_BIN_LIMIT = 256
"""Up to this many frames our decay bins equal the toolkit's (its uint8 indices wrap beyond)."""


def _as_stack(array: np.ndarray) -> np.ndarray:
    """A 2-D mask becomes a 1×H×W stack; a T×H×W stack is returned as is (as bool)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected an H×W or T×H×W mask array, got shape {array.shape}")
    return array.astype(bool, copy=False)


def _check_shapes(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} shapes differ")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void {void.shape} and ground truth {gt.shape} shapes differ")


def db_eval_iou(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None
) -> np.ndarray | float:
    """Region similarity J per frame.

    Args:
        gt, pred: H×W or T×H×W masks (non-zero = foreground).
        void: optional mask of the same shape; its pixels count neither way.

    Returns:
        float64 array of shape T (a float for 2-D input); 1 where the union is empty.
    """
    squeeze = np.ndim(gt) == 2
    gt, pred = _as_stack(gt), _as_stack(pred)
    void = None if void is None else _as_stack(void)
    _check_shapes(gt, pred, void)
    inter_map = gt & pred
    union_map = gt | pred
    if void is not None:
        inter_map &= ~void
        union_map &= ~void
    inter = inter_map.reshape(len(gt), -1).sum(axis=1, dtype=np.int64)
    union = union_map.reshape(len(gt), -1).sum(axis=1, dtype=np.int64)
    j = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(j[0]) if squeeze else j


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """The toolkit's ``seg2bmap`` for every frame of a stack.

    A pixel is boundary when it differs from its right, bottom or bottom-right neighbour;
    along the last row only the right neighbour counts, along the last column only the
    bottom one, and the bottom-right corner is never boundary (outside is not background).

    Args:
        masks: T×H×W (or H×W) masks, non-zero = foreground.

    Returns:
        bool array of the input's shape.
    """
    seg = np.asarray(masks).astype(bool, copy=False)
    b = np.zeros(seg.shape, dtype=bool)
    right = seg[..., :, :-1] ^ seg[..., :, 1:]  # differs from right neighbour
    below = seg[..., :-1, :] ^ seg[..., 1:, :]  # differs from bottom neighbour
    diag = seg[..., :-1, :-1] ^ seg[..., 1:, 1:]
    b[..., :-1, :-1] = right[..., :-1, :] | below[..., :, :-1] | diag
    b[..., -1, :-1] = right[..., -1, :]
    b[..., :-1, -1] = below[..., :, -1]
    return b


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Tolerance radius in pixels: ``bound_th`` itself when ≥ 1, else ceil(bound_th · diag)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element {(x, y): x² + y² ≤ r²} as a (2r+1)×(2r+1) uint8 array."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def dilate_stack(bmaps: np.ndarray, radius: int) -> np.ndarray:
    """Dilate each frame of a T×H×W bool stack by ``disk(radius)`` in one OpenCV call.

    Frames are stacked vertically with ``radius`` empty rows between them so that nothing
    spreads from one frame into the next; pixels outside the image never dilate inwards.

    Returns:
        bool array T×H×W.
    """
    t, h, w = bmaps.shape
    if radius <= 0 or t == 0:
        return bmaps.copy()
    tall = np.zeros((t, h + radius, w), dtype=np.uint8)
    tall[:, :h] = bmaps
    dilated = cv2.dilate(tall.reshape(t * (h + radius), w), disk(radius))
    return dilated.reshape(t, h + radius, w)[:, :h].astype(bool)


def count_per_frame(masks: np.ndarray) -> np.ndarray:
    """T×H×W bool → int64 array of shape T with the foreground pixel count of each frame."""
    return np.fromiter((np.count_nonzero(frame) for frame in masks), np.int64, len(masks))


@dataclass
class BoundaryParts:
    """Boundary pixels of one T×H×W mask stack and their tolerance dilation.

    Everything is computed inside the stack's bounding box (grown by one pixel for the
    boundary, by the radius for the dilation): outside it both maps are empty, so the result
    equals the full-frame computation at a fraction of the cost for small objects.

    Attributes:
        frame, y, x: coordinates of the boundary pixels (int64, same length).
        counts: boundary pixels per frame, shape T.
        dilated: T×h×w bool crop of the dilated boundary map, placed at (top, left).
    """

    frame: np.ndarray
    y: np.ndarray
    x: np.ndarray
    counts: np.ndarray
    dilated: np.ndarray
    top: int
    left: int

    def hits(self, other: BoundaryParts) -> np.ndarray:
        """Per frame: how many of ``other``'s boundary pixels lie in this dilated map."""
        t = len(self.counts)
        if other.frame.size == 0 or self.frame.size == 0:
            return np.zeros(t, dtype=np.int64)
        y, x = other.y - self.top, other.x - self.left
        h, w = self.dilated.shape[1:]
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        frame = other.frame[inside]
        hit = self.dilated[frame, y[inside], x[inside]]
        return np.bincount(frame[hit], minlength=t).astype(np.int64)


def boundary_parts(masks: np.ndarray, radius: int) -> BoundaryParts:
    """:class:`BoundaryParts` of a T×H×W bool stack (void already set to background)."""
    t, height, width = masks.shape
    footprint = masks.any(axis=0)
    rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BoundaryParts(
            empty, empty, empty, np.zeros(t, np.int64), np.zeros((t, 0, 0), bool), 0, 0
        )
    # one extra row/column on each side: the pixel before the mask is boundary, the one after
    # must be present so that the crop's last row/column is not mistaken for the image's
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
    bmap = boundary_map(masks[:, y0:y1, x0:x1])
    frame, y, x = np.nonzero(bmap)
    dy0, dy1 = max(y0 - radius, 0), min(y1 + radius, height)
    dx0, dx1 = max(x0 - radius, 0), min(x1 + radius, width)
    grown = np.zeros((t, dy1 - dy0, dx1 - dx0), dtype=bool)
    grown[:, y0 - dy0 : y1 - dy0, x0 - dx0 : x1 - dx0] = bmap
    return BoundaryParts(
        frame=frame,
        y=y + y0,
        x=x + x0,
        counts=np.bincount(frame, minlength=t).astype(np.int64),
        dilated=dilate_stack(grown, radius),
        top=dy0,
        left=dx0,
    )


def f_from_counts(
    n_pred: np.ndarray, n_gt: np.ndarray, pred_match: np.ndarray, gt_match: np.ndarray
) -> np.ndarray:
    """F per frame from boundary pixel counts, with the toolkit's empty conventions.

    Args:
        n_pred, n_gt: boundary pixel counts of prediction and ground truth.
        pred_match: predicted boundary pixels within tolerance of the GT boundary.
        gt_match: GT boundary pixels within tolerance of the predicted boundary.

    Returns:
        float64 array of the inputs' (broadcast) shape.
    """
    n_pred, n_gt = np.asarray(n_pred), np.asarray(n_gt)
    precision = np.where(n_pred > 0, pred_match / np.maximum(n_pred, 1), 1.0)
    recall = np.where(n_gt > 0, gt_match / np.maximum(n_gt, 1), 1.0)
    precision = np.where((n_pred > 0) & (n_gt == 0), 0.0, precision)
    recall = np.where((n_pred == 0) & (n_gt > 0), 0.0, recall)
    denom = precision + recall
    return np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)


def db_eval_boundary(
    gt: np.ndarray,
    pred: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> np.ndarray | float:
    """Boundary similarity F per frame.

    Args:
        gt, pred: H×W or T×H×W masks (non-zero = foreground).
        void: optional mask; void pixels are set to background before taking boundaries.
        bound_th: tolerance as a fraction of the diagonal (or pixels when ≥ 1).

    Returns:
        float64 array of shape T (a float for 2-D input).
    """
    squeeze = np.ndim(gt) == 2
    gt, pred = _as_stack(gt), _as_stack(pred)
    void = None if void is None else _as_stack(void)
    _check_shapes(gt, pred, void)
    if void is not None:
        gt, pred = gt & ~void, pred & ~void
    radius = boundary_radius(*gt.shape[1:], bound_th)
    gt_parts, pred_parts = boundary_parts(gt, radius), boundary_parts(pred, radius)
    f = f_from_counts(
        pred_parts.counts, gt_parts.counts, gt_parts.hits(pred_parts), pred_parts.hits(gt_parts)
    )
    return float(f[0]) if squeeze else f


def decay_bin_edges(n_frames: int) -> np.ndarray:
    """Start indices of the toolkit's four overlapping decay bins (5 values).

    Bin ``i`` covers frames ``edges[i] .. edges[i+1]`` inclusive (neighbouring bins share a
    frame). The toolkit computes ``round(linspace(1, n, 5) + 1e-10) - 1`` and casts it to
    uint8. Up to :data:`TOOLKIT_BIN_LIMIT` (256) frames that cast is exact and we return the
    same bins. Beyond, the toolkit's indices wrap modulo 256 (e.g. 300 frames: last bin
    ``[224:44]``, empty, decay NaN); we keep the exact indices instead, i.e. the bins the
    toolkit means. (Under NumPy 2 the toolkit also breaks at exactly 256 frames, where its
    ``ids[i + 1] + 1`` overflows uint8 255 → 0; we follow its NumPy 1 behaviour there.)
    """
    if n_frames < 1:
        raise ValueError("decay bins need at least one frame")
    edges = np.round(np.linspace(1, n_frames, N_DECAY_BINS + 1) + 1e-10) - 1
    return edges.astype(np.int64)


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame values (toolkit ``db_statistics``).

    Args:
        per_frame: shape T, per-frame J or F.

    Returns:
        (mean, recall = mean(values > 0.5), decay = mean(bin 0) − mean(bin 3)); NaN when
        undefined (no frames).
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan
    recall = float(np.mean(values > 0.5))
    edges = decay_bin_edges(values.size)
    first, last = values[edges[0] : edges[1] + 1], values[edges[3] : edges[4] + 1]
    decay = _nanmean(first) - _nanmean(last)
    return mean, recall, decay


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def region_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mask intersection and union pixel counts (RIS metrics).

    Args:
        gt, pred: N×H×W (or H×W) masks.

    Returns:
        (intersection, union) int64 arrays of shape N.
    """
    gt, pred = _as_stack(gt), _as_stack(pred)
    _check_shapes(gt, pred, None)
    return count_per_frame(gt & pred), count_per_frame(gt | pred)


PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def ris_summary(inter: np.ndarray, union: np.ndarray) -> dict[str, float | int]:
    """RefCOCO-style metrics from per-sentence intersection/union counts.

    IoU = I/U (0 when U = 0), mIoU = mean IoU, oIoU = ΣI / ΣU, prec@X = share of sentences
    with IoU ≥ X for X in 0.5 … 0.9.
    """
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    n = int(iou.size)
    out: dict[str, float | int] = {
        "mIoU": float(iou.mean()) if n else math.nan,
        "oIoU": float(inter.sum() / union.sum()) if union.sum() > 0 else 0.0,
    }
    for threshold in PREC_THRESHOLDS:
        out[f"prec@{threshold:.1f}"] = float(np.mean(iou >= threshold)) if n else math.nan
    out["n_sentences"] = n
    return out
