"""Expression subsets (``subsets.json``): reading, finding, tagging rows, metrics per subset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refsam.errors import DataError
from refsam.eval.subsets import ExpressionSubsets

LABELS = {"v1": {"0": "appearance", "1": "motion"}, "v2": {"0": "motion", "1": "appearance"}}


def _write(folder: Path, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "subsets.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _row(video: str, exp_id: str, j: float, f: float, *, key: str = "video") -> dict[str, object]:
    return {key: video, "exp_id": exp_id, "J": j, "F": f, "J&F": (j + f) / 2}


def test_find_in_the_split_folder_or_the_given_folder(tmp_path: Path) -> None:
    assert ExpressionSubsets.find(None, "mevis", "valid") is None
    assert ExpressionSubsets.find(tmp_path, "mevis", "valid") is None
    path = _write(tmp_path / "mevis" / "valid", LABELS)
    found = ExpressionSubsets.find(tmp_path, "mevis", "valid")
    assert found is not None and found.path == path
    assert found.names == ["appearance", "motion"]
    assert ExpressionSubsets.find(tmp_path, "mevis", "valid_u") is None  # other split: none
    direct = ExpressionSubsets.find(tmp_path / "mevis" / "valid", "mevis", "valid")
    assert direct is not None and direct.labels == found.labels


def test_metrics_are_means_over_each_subset(tmp_path: Path) -> None:
    subsets = ExpressionSubsets.read(_write(tmp_path, LABELS))
    rows = [
        _row("v1", "0", 0.2, 0.4),
        _row("v1", "1", 0.6, 0.8),
        _row("v2", "0", 0.1, 0.3),
        _row("v2", "1", 1.0, 0.9),
        _row("v3", "0", 0.5, 0.5),  # not in the file: no subset
    ]
    tagged = subsets.tag(rows)
    assert [r["subset"] for r in tagged] == ["appearance", "motion", "motion", "appearance", ""]
    assert "subset" not in rows[0]  # the input rows are left alone
    metrics = subsets.metrics(tagged)
    assert metrics["n/appearance"] == 2 and metrics["n/motion"] == 2
    assert metrics["J/appearance"] == pytest.approx((0.2 + 1.0) / 2)
    assert metrics["F/appearance"] == pytest.approx((0.4 + 0.9) / 2)
    assert metrics["J&F/motion"] == pytest.approx(((0.6 + 0.1) / 2 + (0.8 + 0.3) / 2) / 2)


def test_davis_object_rows_and_empty_subsets(tmp_path: Path) -> None:
    """Rows with ``sequence`` (DAVIS) count like ``video``; a subset of the file with no
    scored row gets ``n`` = 0 and no J/F; rows without ``exp_id`` get no subset."""
    subsets = ExpressionSubsets.read(
        _write(tmp_path, {"seq": {"0_1": "appearance", "1_1": "motion"}})
    )
    tagged = subsets.tag(
        [_row("seq", "0_1", 0.5, 0.7, key="sequence"), {"sequence": "seq", "J": 0.1, "F": 0.1}]
    )
    assert [r["subset"] for r in tagged] == ["appearance", ""]
    metrics = subsets.metrics(tagged)
    assert metrics == {"J/appearance": 0.5, "F/appearance": 0.7, "J&F/appearance": pytest.approx(0.6),
                       "n/appearance": 1, "n/motion": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable expression subsets"),
        ([1, 2], "expected {video: {exp_id: subset}}"),
        ({"v1": ["appearance"]}, "['v1'] must map expression ids to subset names"),
        ({"v1": {"0": 3}}, "['v1']['0'] must be a subset name"),
        ({"v1": {"0": ""}}, "['v1']['0'] must be a subset name"),
        ({"v1": {"0": "a/b"}}, "without '/'"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path: Path, content: object, message: str) -> None:
    path = _write(tmp_path / "ds" / "split", content)
    with pytest.raises(DataError) as info:
        ExpressionSubsets.find(tmp_path, "ds", "split")
    assert str(path) in str(info.value) and message in str(info.value)
