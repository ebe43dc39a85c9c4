"""Protocols on in-memory arrays: DAVIS semi/unsupervised, Ref-DAVIS17, MeViS, RefCOCO."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.protocols import davis, davis_sequence, label_map_from_probs
from tests.eval import reference_toolkit as ref


def two_objects(t: int = 5, h: int = 40, w: int = 60) -> np.ndarray:
    labels = np.zeros((t, h, w), np.uint8)
    labels[:, 5:15, 5:15] = 1
    labels[:, 20:35, 30:50] = 2
    return labels


def test_unsupervised_matches_swapped_labels() -> None:
    gt = two_objects()
    pred = np.where(gt == 1, 2, np.where(gt == 2, 1, 0)).astype(np.uint8)
    j, f = davis_sequence("s", gt, pred, unsupervised=True)
    assert j.shape == (2, 5) and np.all(j == 1) and np.all(f == 1)
    # the semi-supervised protocol keeps labels: swapped objects score 0 (frames 1..3 only)
    j, f = davis_sequence("s", gt, pred, unsupervised=False)
    assert j.shape == (2, 3) and np.all(j == 0) and np.all(f == 0)


def test_unsupervised_extra_and_missing_proposals() -> None:
    gt = two_objects()
    pred = gt.copy()
    pred[:, 0:3, 0:3] = 3  # an extra proposal is left unmatched
    j, _ = davis_sequence("s", gt, pred, unsupervised=True)
    assert np.all(j == 1)
    only_one = np.where(gt == 2, 1, 0).astype(np.uint8)  # object 2 found, labelled 1
    j, f = davis_sequence("s", gt, only_one, unsupervised=True)
    assert np.all(j[0] == 0) and np.all(j[1] == 1) and np.all(f[0] == 0)


def test_void_modes() -> None:
    gt = two_objects()
    gt[:, 5:15, 15:18] = 255  # void band right of object 1
    pred = np.where(gt == 255, 1, gt).astype(np.uint8)  # prediction spills into the void
    j, f = davis_sequence("s", gt, pred, unsupervised=True, void="exclude")
    assert np.all(j == 1) and np.all(f == 1)
    j, _ = davis_sequence("s", gt, pred, unsupervised=True, void="background")
    assert np.allclose(j[0], 100 / 130)


def test_semi_supervised_rejects_unknown_labels() -> None:
    gt = two_objects()
    pred = gt.copy()
    pred[2, 0, 0] = 3
    with pytest.raises(UserError, match="prediction label 3 but the ground truth has 2"):
        davis_sequence("seq-a", gt, pred, unsupervised=False)
    pred[:, 0, 0] = 21
    with pytest.raises(UserError, match="20 proposals"):
        davis_sequence("seq-a", gt, pred, unsupervised=True)


def test_objects_are_counted_over_all_frames() -> None:
    # object 2 appears from frame 2 on; the toolkit counts objects in frame 0 only (it would
    # drop object 2), we count every label of the sequence (identical when all objects are in
    # the first frame, as in DAVIS)
    gt = two_objects(t=5)
    gt[:2][gt[:2] == 2] = 0
    j, _ = davis_sequence("s", gt, np.zeros_like(gt), unsupervised=False)
    assert j.shape == (2, 3)
    np.testing.assert_array_equal(j[1], [1, 0, 0])  # frame 1: both empty → 1


def test_shape_mismatch_names_the_sequence() -> None:
    with pytest.raises(UserError, match="seq-b"):
        davis_sequence("seq-b", two_objects(), two_objects(t=4), unsupervised=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unsupervised", [True, False])
@pytest.mark.parametrize("void", ["exclude", "background"])
def test_sequence_matches_toolkit_oracle(seed: int, unsupervised: bool, void: str) -> None:
    rng = np.random.default_rng(seed)
    t, h, w = int(rng.integers(3, 6)), int(rng.integers(10, 40)), int(rng.integers(10, 50))
    gt, pred = np.zeros((t, h, w), np.uint8), np.zeros((t, h, w), np.uint8)
    n_gt, n_pred = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    for frame in range(t):
        for label in range(1, n_gt + 1):
            cv2.circle(
                gt[frame],
                (int(rng.integers(w)), int(rng.integers(h))),
                int(rng.integers(2, 12)),
                label,
                -1,
            )
        for label in range(1, n_pred + 1):
            cv2.circle(
                pred[frame],
                (int(rng.integers(w)), int(rng.integers(h))),
                int(rng.integers(2, 12)),
                label,
                -1,
            )
    gt[rng.random(gt.shape) < 0.03] = 255
    for label in range(1, n_gt + 1):  # every object in the first frame (toolkit counts there)
        gt[0, label - 1, label - 1] = label
    if not unsupervised:
        pred = np.minimum(pred, np.where(gt[1:-1] == 255, 0, gt[1:-1]).max()).astype(np.uint8)
    j, f = davis_sequence("s", gt, pred, unsupervised=unsupervised, void=void)
    jr, fr = ref.davis_sequence(
        gt, pred, unsupervised=unsupervised, void_excluded=void == "exclude"
    )
    np.testing.assert_allclose(j, jr, atol=1e-6)
    np.testing.assert_allclose(f, fr, atol=1e-6)


def test_davis_summary_is_the_toolkit_aggregation() -> None:
    gt = two_objects(t=6)
    pred = gt.copy()
    pred[3:] = np.where(gt[3:] == 2, 0, gt[3:])  # object 2 lost from frame 3 on
    result = davis([("a", gt, pred), ("b", gt, gt)], unsupervised=True)
    s = result.summary
    assert s["n_objects"] == 4 and s["protocol"] == "davis"
    assert s["J"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)
    # object a/2: per-frame J = 1,1,1,0,0,0 → recall 0.5, decay over bins [0:2], [4:6] = 1
    row = next(r for r in result.table if r["sequence"] == "a" and r["object"] == 2)
    assert row["J_recall"] == 0.5 and row["J_decay"] == pytest.approx(1.0)
    assert set(s) == {
        "protocol",
        "J",
        "F",
        "J&F",
        "J_recall",
        "J_decay",
        "F_recall",
        "F_decay",
        "n_objects",
    }


def test_ref_davis17_is_the_mean_of_four_sets() -> None:
    gt = two_objects()
    half = np.where(gt == 2, 0, gt).astype(np.uint8)
    sets = [[("a", gt, gt)], [("a", gt, half)], [("a", gt, gt)], [("a", gt, half)]]
    result = protocols.ref_davis17(sets)
    per_set = [davis(items).summary["J&F"] for items in sets]
    assert result.summary["J&F"] == pytest.approx(np.mean(per_set))
    assert result.summary["n_objects"] == 2 and len(result.table) == 4
    assert set(result.tables) == {"anno_0", "anno_1", "anno_2", "anno_3"}


def test_label_map_from_probs() -> None:
    probs = np.array([[[0.4, 0.6, 0.9, 0.55]], [[0.45, 0.7, 0.8, 0.55]]])  # 2 objects, 1×4
    out = label_map_from_probs(probs)
    np.testing.assert_array_equal(out, [[0, 2, 1, 1]])  # <0.5 zeroed; tie → first object
    np.testing.assert_array_equal(label_map_from_probs(probs, labels=[5, 7]), [[0, 7, 5, 5]])
    assert out.dtype == np.uint8
    with pytest.raises(ValueError):
        label_map_from_probs(probs, labels=[1])


def test_mevis_missing_prediction_scores_zero() -> None:
    gt = two_objects() > 0
    result = protocols.mevis([("v", "0", gt, gt), ("v", "1", gt, None), ("w", "0", gt, ~gt)])
    s = result.summary
    assert s["J"] == pytest.approx(1 / 3) and s["n_expressions"] == 3 and s["n_missing"] == 1
    assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)
    assert result.table[1]["missing"] is True


def test_mevis_empty_gt_and_prediction_is_one() -> None:
    empty = np.zeros((3, 10, 10), bool)
    assert protocols.mevis([("v", "0", empty, empty)]).summary["J&F"] == 1.0


def test_refcoco_per_sentence() -> None:
    gt = np.zeros((10, 10), bool)
    gt[:5] = True
    pred = np.zeros_like(gt)
    pred[:4] = True
    empty = np.zeros_like(gt)
    result = protocols.refcoco([("1", gt, pred), ("2", gt, gt), ("3", empty, empty)])
    s = result.summary
    assert s["mIoU"] == pytest.approx((0.8 + 1 + 0) / 3)
    assert s["oIoU"] == pytest.approx(90 / 100)
    assert s["prec@0.8"] == pytest.approx(2 / 3) and s["prec@0.9"] == pytest.approx(1 / 3)
    assert s["n_sentences"] == 3
    with pytest.raises(UserError, match="sentence 4"):
        protocols.refcoco([("4", gt, gt[:5])])
