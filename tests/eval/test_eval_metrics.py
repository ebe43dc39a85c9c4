"""J, F and DAVIS statistics: hand-checked reference cases and the toolkit oracle."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from refsam.eval import metrics
from refsam.eval.metrics import (
    boundary_map,
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    decay_bin_edges,
    disk,
    ris_summary,
)
from tests.eval import reference_toolkit as ref


def square(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ---------------------------------------------------------------- hand-checked cases


def test_identical_and_both_empty() -> None:
    gt = square(50, 50, 10, 10, 10)
    assert db_eval_iou(gt, gt) == 1.0 and db_eval_boundary(gt, gt) == 1.0
    empty = np.zeros((50, 50), bool)
    assert db_eval_iou(empty, empty) == 1.0 and db_eval_boundary(empty, empty) == 1.0


def test_prediction_empty_and_prediction_on_empty_gt() -> None:
    gt = square(50, 50, 10, 10, 10)
    empty = np.zeros_like(gt)
    assert db_eval_iou(gt, empty) == 0.0 and db_eval_boundary(gt, empty) == 0.0
    assert db_eval_iou(empty, gt) == 0.0 and db_eval_boundary(empty, gt) == 0.0


def test_disjoint() -> None:
    gt, pred = square(100, 100, 10, 10, 10), square(100, 100, 60, 60, 10)
    assert db_eval_iou(gt, pred) == 0.0 and db_eval_boundary(gt, pred) == 0.0


def test_one_pixel_shift() -> None:
    gt, pred = square(100, 100, 10, 10, 10), square(100, 100, 10, 11, 10)
    assert db_eval_iou(gt, pred) == pytest.approx(90 / 110, abs=1e-12)
    assert db_eval_boundary(gt, pred) == 1.0  # r = 2 covers a 1-px shift


def test_two_pixel_shift_counted_by_hand() -> None:
    # 50×50 → r = ceil(0.008·70.7) = 1. The 10×10 square's seg2bmap boundary has 40 pixels
    # (outer top row and left column, inner right column and bottom row); shifted right by
    # 2 px, 22 of the 40 lie within the 4-neighbourhood of the other boundary, both ways.
    gt, pred = square(50, 50, 10, 10, 10), square(50, 50, 10, 12, 10)
    assert boundary_radius(50, 50) == 1
    assert boundary_map(gt).sum() == 40
    assert db_eval_iou(gt, pred) == pytest.approx(80 / 120, abs=1e-12)
    assert db_eval_boundary(gt, pred) == pytest.approx(22 / 40, abs=1e-12)


def test_seg2bmap_convention_on_a_square() -> None:
    b = boundary_map(square(8, 8, 2, 2, 3))
    expected = np.zeros((8, 8), bool)
    expected[1, 1:5] = True  # row above, from the column left of the square
    expected[1:5, 1] = True  # column left
    expected[2:5, 4] = True  # last column of the square (differs from its right)
    expected[4, 2:5] = True  # last row of the square (differs from below)
    np.testing.assert_array_equal(b, expected)


def test_mask_touching_the_border() -> None:
    # outside the image is not background: a band on the bottom edge has only its top
    # boundary (row 39, 50 px)
    gt = np.zeros((50, 50), bool)
    gt[40:] = True
    assert boundary_map(gt).sum() == 50 and boundary_map(gt)[39].all()
    near, far = np.zeros_like(gt), np.zeros_like(gt)
    near[41:], far[42:] = True, True
    assert db_eval_iou(gt, near) == pytest.approx(0.9) and db_eval_boundary(gt, near) == 1.0
    assert db_eval_iou(gt, far) == pytest.approx(0.8) and db_eval_boundary(gt, far) == 0.0


def test_full_frame_mask() -> None:
    full, empty = np.ones((40, 60), bool), np.zeros((40, 60), bool)
    half = full.copy()
    half[:, 30:] = False
    assert db_eval_iou(full, full) == 1.0 and db_eval_boundary(full, full) == 1.0
    # a full frame has no boundary: with an empty prediction both boundaries are empty
    assert db_eval_iou(full, empty) == 0.0 and db_eval_boundary(full, empty) == 1.0
    assert db_eval_boundary(full, half) == 0.0  # prediction boundary, none in the GT


def test_void_pixels_are_excluded() -> None:
    gt = square(50, 50, 10, 10, 10)
    pred = gt.copy()
    pred[10:20, 20:25] = True
    void = np.zeros_like(gt)
    void[10:20, 20:25] = True
    assert db_eval_iou(gt, pred) == pytest.approx(100 / 150)
    assert db_eval_iou(gt, pred, void) == 1.0 and db_eval_boundary(gt, pred, void) == 1.0
    void_right = np.zeros_like(gt)
    void_right[:, 15:] = True
    left_half = gt & ~void_right
    assert db_eval_iou(gt, left_half, void_right) == 1.0
    assert db_eval_boundary(gt, left_half, void_right) == 1.0
    all_void = np.ones_like(gt)
    assert db_eval_iou(gt, pred, all_void) == 1.0  # empty union after exclusion


@pytest.mark.parametrize(
    ("height", "width", "radius"), [(480, 910, 9), (480, 853, 8), (480, 854, 8)]
)
def test_odd_sizes_tolerance_radius(height: int, width: int, radius: int) -> None:
    # diag(480×910) = 1028.8 → 8.23 → 9; diag(480×853) = 978.8 → 7.83 → 8
    assert boundary_radius(height, width) == radius
    gt = np.zeros((height, width), bool)
    gt[50:450, 200:230] = True  # tall and thin: the vertical edges dominate
    within, beyond = np.roll(gt, radius, axis=1), np.roll(gt, radius + 1, axis=1)
    assert db_eval_boundary(gt, within) == 1.0
    assert db_eval_boundary(gt, beyond) < 0.5


def test_disk_is_euclidean() -> None:
    k = disk(2)
    assert k.shape == (5, 5) and k.sum() == 13  # 1 + 4 + 4 + 4 (x²+y² ≤ 4)
    assert k[0, 2] == 1 and k[0, 1] == 0 and k[1, 1] == 1
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
    assert not np.array_equal(disk(8), ellipse)  # OpenCV's ellipse is not the disk


def test_stack_and_frame_agree() -> None:
    rng = np.random.default_rng(1)
    gt, pred = rng.random((4, 30, 41)) > 0.6, rng.random((4, 30, 41)) > 0.6
    stacked = db_eval_boundary(gt, pred)
    assert stacked.shape == (4,)
    for t in range(4):
        assert db_eval_boundary(gt[t], pred[t]) == pytest.approx(stacked[t], abs=1e-12)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        db_eval_iou(np.zeros((3, 4)), np.zeros((4, 3)))


# ---------------------------------------------------------------- statistics


def test_statistics_hand_checked() -> None:
    values = np.arange(10) / 10  # bins [0:3], [2:6], [5:8], [7:10]
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.45)
    assert recall == pytest.approx(0.4)  # strictly above 0.5: 0.6 … 0.9
    assert decay == pytest.approx(0.1 - 0.8)
    np.testing.assert_array_equal(decay_bin_edges(10), [0, 2, 5, 7, 9])


def test_statistics_rounds_halves_up_like_the_toolkit() -> None:
    # n = 7: linspace gives 2.5, which the toolkit's +1e-10 rounds up (bin 0 = frames 0..2)
    np.testing.assert_array_equal(decay_bin_edges(7), [0, 2, 3, 5, 6])
    _, _, decay = db_statistics(np.array([1, 1, 0, 0, 0, 0, 0.0]))
    assert decay == pytest.approx(2 / 3)


def test_statistics_single_frame_and_empty() -> None:
    assert db_statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    assert all(math.isnan(v) for v in db_statistics(np.array([])))


def test_statistics_beyond_256_frames_uses_correct_bins() -> None:
    values = np.zeros(300)
    values[224:] = 1.0
    np.testing.assert_array_equal(decay_bin_edges(300), [0, 75, 150, 224, 299])
    assert db_statistics(values)[2] == pytest.approx(-1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 13, 50, 101, 256])
def test_statistics_match_toolkit(n: int) -> None:
    values = np.random.default_rng(n).random(n)
    np.testing.assert_allclose(db_statistics(values), ref.statistics(values), atol=1e-12)


# ---------------------------------------------------------------- oracle on random masks


def random_blobs(rng: np.random.Generator, shape: tuple[int, int, int], n: int) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    t_len, h, w = shape
    for t in range(t_len):
        for label in range(1, n + 1):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            radius = int(rng.integers(1, max(2, min(h, w) // 3)))
            cv2.circle(labels[t], centre, radius, label, -1)
    return labels


@pytest.mark.parametrize("seed", range(12))
def test_matches_toolkit_oracle_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(3, 60)), int(rng.integers(3, 90)))
    gt = random_blobs(rng, shape, 1) > 0
    pred = random_blobs(rng, shape, 1) > 0
    if seed % 3 == 0:
        pred = gt ^ (rng.random(shape) < 0.05)  # near-identical: boundary matches matter
    void = rng.random(shape) < 0.1 if seed % 2 else None
    j = db_eval_iou(gt, pred, void)
    f = db_eval_boundary(gt, pred, void)
    np.testing.assert_allclose(j, ref.per_frame(gt, pred, void, ref.iou_frame), atol=1e-6)
    np.testing.assert_allclose(f, ref.per_frame(gt, pred, void, ref.f_frame), atol=1e-6)


@pytest.mark.slow  # the oracle's pixel loops take seconds at 480×854
def test_matches_toolkit_oracle_at_davis_size() -> None:
    rng = np.random.default_rng(7)
    gt = random_blobs(rng, (1, 480, 854), 1) > 0
    pred = np.roll(gt, 5, axis=2) ^ (rng.random(gt.shape) < 0.002)
    assert db_eval_boundary(gt, pred)[0] == pytest.approx(ref.f_frame(gt[0], pred[0]), abs=1e-6)
    assert db_eval_iou(gt, pred)[0] == pytest.approx(ref.iou_frame(gt[0], pred[0]), abs=1e-6)


# ---------------------------------------------------------------- RIS


def test_ris_summary_hand_checked() -> None:
    inter = np.array([5, 7, 0, 9, 0])
    union = np.array([10, 10, 10, 10, 0])  # IoUs 0.5, 0.7, 0, 0.9, 0 (empty union → 0)
    out = ris_summary(inter, union)
    assert out["mIoU"] == pytest.approx(2.1 / 5)
    assert out["oIoU"] == pytest.approx(21 / 40)
    assert out["prec@0.5"] == pytest.approx(3 / 5)
    assert out["prec@0.7"] == pytest.approx(2 / 5)  # 0.7 itself counts (IoU ≥ X)
    assert out["prec@0.8"] == pytest.approx(1 / 5)
    assert out["prec@0.9"] == pytest.approx(1 / 5)
    assert out["n_sentences"] == 5


def test_module_constants() -> None:
    assert metrics.BOUND_TH == 0.008 and metrics.N_DECAY_BINS == 4
