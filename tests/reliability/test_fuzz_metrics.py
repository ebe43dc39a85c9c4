"""Property tests of the metrics (J, F, statistics) and of palette PNG encoding/decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refsam.eval.io import encode_png, read_png
from refsam.eval.metrics import db_eval_boundary, db_eval_iou, db_statistics, ris_summary

PROPS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, ground truth and void masks of one T×H×W shape (small, any content)."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    kind = arrays(np.bool_, shape)
    return draw(kind), draw(kind), draw(kind)


@PROPS
@given(masks=mask_pairs())
def test_j_and_f_in_unit_interval_and_symmetric(masks) -> None:
    a, b, void = masks
    for args in ((a, b), (a, b, void)):
        j, f = db_eval_iou(*args), db_eval_boundary(*args)
        assert j.shape == f.shape == (len(a),)
        assert np.all((j >= 0) & (j <= 1)) and np.all((f >= 0) & (f <= 1))
        swapped = (args[1], args[0], *args[2:])
        np.testing.assert_allclose(db_eval_iou(*swapped), j)
        np.testing.assert_allclose(db_eval_boundary(*swapped), f)


@PROPS
@given(masks=mask_pairs())
def test_identical_masks_score_one(masks) -> None:
    a, _, void = masks
    assert np.all(db_eval_iou(a, a) == 1.0) and np.all(db_eval_boundary(a, a) == 1.0)
    assert np.all(db_eval_iou(a, a, void) == 1.0)
    assert np.all(db_eval_boundary(a, a, void) == 1.0)


@PROPS
@given(masks=mask_pairs())
def test_disjoint_non_empty_masks_score_zero_j(masks) -> None:
    a, _, _ = masks
    b = ~a
    j = db_eval_iou(a, b)
    assert np.all(j[a.reshape(len(a), -1).any(1) | b.reshape(len(b), -1).any(1)] == 0.0)


@PROPS
@given(values=st.lists(st.floats(0, 1), min_size=1, max_size=300))
def test_statistics_bounds(values: list[float]) -> None:
    mean, recall, decay = db_statistics(np.array(values))
    assert 0 <= mean <= 1 and 0 <= recall <= 1 and -1 <= decay <= 1


@PROPS
@given(
    counts=st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=20
    ).map(lambda pairs: [(min(i, u), u) for i, u in pairs])
)
def test_ris_summary_bounds(counts: list[tuple[int, int]]) -> None:
    inter, union = np.array([c[0] for c in counts]), np.array([c[1] for c in counts])
    out = ris_summary(inter, union)
    for key, value in out.items():
        if key != "n_sentences":
            assert 0 <= value <= 1, key


@settings(PROPS, max_examples=60)
@given(labels=st.integers(1, 20).flatmap(lambda h: arrays(np.uint8, (h, 7))))
def test_palette_png_round_trip(labels: np.ndarray, tmp_path_factory) -> None:
    path = Path(tmp_path_factory.mktemp("png")) / "m.png"
    for palette in (True, False):
        path.write_bytes(encode_png(labels, palette=palette))
        assert np.array_equal(read_png(path), labels)
