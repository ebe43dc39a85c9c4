"""Benchmark ``refsam score`` (DAVIS unsupervised protocol) against a per-frame, per-object
implementation written the way the DAVIS 2017 toolkit does it.

Synthetic DAVIS-size set: 480×854, 50 frames, 2 objects per sequence with a void band, in the
Annotations_unsupervised layout (palette PNGs); predictions are shifted, noisy copies with
the labels swapped in every other sequence (so the Hungarian matching matters). Both sides
read the PNGs and produce the summary; the numbers must be identical (asserted).

    python bench/score.py            # --quick: 4 sequences
    python bench/score.py --full     # 30 sequences
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import parse_args, write_result  # noqa: E402

from refsam.eval.io import write_label_png  # noqa: E402
from refsam.eval.layouts import score_davis  # noqa: E402

HEIGHT, WIDTH, FRAMES, OBJECTS = 480, 854, 50, 2


def make_set(root: Path, n_sequences: int, seed: int = 0) -> None:
    """GT under root/gt, predictions under root/pred (``<seq>/<frame>.png``)."""
    rng = np.random.default_rng(seed)
    for s in range(n_sequences):
        centres = rng.uniform([150, 100], [700, 380], size=(OBJECTS, 2))
        velocity = rng.uniform(-3, 3, size=(OBJECTS, 2))
        axes = rng.uniform(30, 110, size=(OBJECTS, 2))
        for t in range(FRAMES):
            gt = np.zeros((HEIGHT, WIDTH), np.uint8)
            pred = np.zeros_like(gt)
            for obj in range(OBJECTS):
                cx, cy = centres[obj] + velocity[obj] * t
                ax = tuple(int(a) for a in axes[obj])
                cv2.ellipse(gt, (int(cx), int(cy)), ax, 0, 0, 360, obj + 1, -1)
                cv2.ellipse(gt, (int(cx), int(cy)), ax, 0, 0, 360, 255, 3)  # void band
                label = (OBJECTS - obj) if s % 2 else obj + 1
                shift = int(rng.integers(-6, 7))
                cv2.ellipse(pred, (int(cx) + shift, int(cy)), ax, 0, 0, 360, label, -1)
            noise = rng.random(gt.shape) < 0.001
            pred[noise] = 0
            write_label_png(root / "gt" / f"seq{s:02d}" / f"{t:05d}.png", gt)
            write_label_png(root / "pred" / f"seq{s:02d}" / f"{t:05d}.png", pred)


# ------------------------------------------------------- the straightforward implementation


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def _seg2bmap(seg: np.ndarray) -> np.ndarray:
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _iou(gt: np.ndarray, pred: np.ndarray, void: np.ndarray) -> float:
    keep = ~void
    union = np.sum((gt | pred) & keep)
    return 1.0 if union == 0 else np.sum(gt & pred & keep) / union


def _f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray) -> float:
    r = math.ceil(0.008 * np.linalg.norm(gt.shape))
    fg_b, gt_b = _seg2bmap(pred & ~void), _seg2bmap(gt & ~void)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), _disk(r))
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), _disk(r))
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0
    precision, recall = np.sum(fg_b * gt_dil) / n_fg, np.sum(gt_b * fg_dil) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _stats(x: np.ndarray) -> tuple[float, float, float]:
    ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(int)
    bins = [x[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return float(np.mean(x)), float(np.mean(x > 0.5)), float(np.mean(bins[0]) - np.mean(bins[3]))


def baseline(root: Path) -> dict[str, float]:
    """Per sequence, per (prediction, GT) pair, per frame — as the toolkit computes it."""
    rows = []
    for seq in sorted(p.name for p in (root / "gt").iterdir()):
        names = sorted(p.name for p in (root / "gt" / seq).glob("*.png"))
        gt = np.stack([np.array(Image.open(root / "gt" / seq / n)) for n in names])
        pred = np.stack([np.array(Image.open(root / "pred" / seq / n)) for n in names])
        void = gt == 255
        gt = np.where(void, 0, gt)
        n_gt = int(gt.max())
        n_pred = max(int(pred.max()), n_gt)
        j = np.zeros((n_pred, n_gt, len(names)))
        f = np.zeros_like(j)
        for g in range(n_gt):
            for p in range(n_pred):
                for t in range(len(names)):
                    a, b = gt[t] == g + 1, pred[t] == p + 1
                    j[p, g, t], f[p, g, t] = _iou(a, b, void[t]), _f(a, b, void[t])
        r, c = linear_sum_assignment(-((j.mean(axis=2) + f.mean(axis=2)) / 2))
        rows += [(_stats(j[pi, gi]), _stats(f[pi, gi])) for pi, gi in zip(r, c, strict=True)]
    jm = float(np.mean([row[0][0] for row in rows]))
    fm = float(np.mean([row[1][0] for row in rows]))
    return {
        "J": jm,
        "F": fm,
        "J&F": (jm + fm) / 2,
        "J_recall": float(np.mean([row[0][1] for row in rows])),
        "J_decay": float(np.mean([row[0][2] for row in rows])),
        "F_recall": float(np.mean([row[1][1] for row in rows])),
        "F_decay": float(np.mean([row[1][2] for row in rows])),
    }


def ours(root: Path) -> dict[str, float]:
    summary = score_davis(root / "pred", root / "gt", unsupervised=True).summary
    return {k: float(v) for k, v in summary.items() if k not in ("protocol", "n_objects")}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n_sequences = 30 if args.full else 4
    repeats = 3
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        root = Path(tmp)
        make_set(root, n_sequences)
        reference, result = baseline(root), ours(root)  # warm-up and correctness
        for key, value in reference.items():
            assert abs(result[key] - value) < 1e-9, (key, result[key], value)
        times: dict[str, list[float]] = {"ours": [], "baseline": []}
        for _ in range(repeats):  # interleaved
            for name, fn in (("ours", ours), ("baseline", baseline)):
                start = time.perf_counter()
                fn(root)
                times[name].append(time.perf_counter() - start)
    ours_s, base_s = float(np.median(times["ours"])), float(np.median(times["baseline"]))
    speedup = base_s / ours_s
    write_result(
        "score",
        params={
            "mode": "full" if args.full else "quick",
            "sequences": n_sequences,
            "frames": FRAMES,
            "height": HEIGHT,
            "width": WIDTH,
            "objects": OBJECTS,
            "protocol": "davis (unsupervised, void excluded)",
            "repeats": repeats,
            "opencv_threads": 1,
        },
        figures={
            "ours_s": ours_s,
            "baseline_s": base_s,
            "ours_s_per_sequence": ours_s / n_sequences,
            "baseline_s_per_sequence": base_s / n_sequences,
            "J&F": result["J&F"],
            "max_abs_diff": max(abs(result[k] - reference[k]) for k in reference),
        },
        ratios={"baseline_over_ours": speedup},
        goal="identical numbers and >= 2x faster than a per-frame, per-object implementation",
        meets_goal=speedup >= 2.0,
    )


if __name__ == "__main__":
    main()
