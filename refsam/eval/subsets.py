"""Expression subsets: held-out labels that group a split's expressions (e.g. ``appearance``
/ ``motion``: resolvable by their colour, size and shape words, or only by their motion
words) and the scores per group.

A split's labels are ``<heldout>/<dataset>/<split>/subsets.json`` (``{video: {exp_id:
subset}}``; the demo generator writes them, never into the raw layout a model reads). With
the file, the evaluator tags every per-sequence row that names an expression (a ``video``
or ``sequence`` column plus ``exp_id``) with its ``subset`` and adds, per subset named in
the file, ``n/<subset>`` (rows scored) and, when n > 0, ``J/<subset>``, ``F/<subset>``,
``J&F/<subset>``: means over the subset's rows, J&F = (mean J + mean F) / 2 as the summary.
Rows are expressions (Ref-YouTube-VOS, MeViS) or, for Ref-DAVIS17, the object rows of all
annotation sets pooled (one row per expression); a row without a label gets no subset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsam.errors import DataError
from refsam.paths import split_dir
from refsam.storage import as_path

log = logging.getLogger(__name__)

SUBSETS_FILE = "subsets.json"
SUBSET_COLUMN = "subset"
SUBSET_METRICS = ("J", "F", "J&F")


def subset_key(metric: str, subset: str) -> str:
    """``"J&F/motion"``: the metric key of ``metric`` over ``subset``."""
    return f"{metric}/{subset}"


def row_expression(row: Mapping[str, object]) -> tuple[str, str] | None:
    """(video, exp_id) of a per-sequence row, None when the row names no expression."""
    video = row.get("video", row.get("sequence"))
    exp_id = row.get("exp_id")
    if video is None or exp_id is None:
        return None
    return str(video), str(exp_id)


@dataclass(frozen=True)
class ExpressionSubsets:
    """The subset of every labelled ``(video, exp_id)`` of one split, read from ``path``."""

    path: Path
    labels: Mapping[tuple[str, str], str]

    @classmethod
    def read(cls, path: Path) -> ExpressionSubsets:
        """Load and check ``{video: {exp_id: subset}}`` (DataError naming the bad key)."""
        try:
            data = json.loads(as_path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable expression subsets ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected {{video: {{exp_id: subset}}}}")
        labels: dict[tuple[str, str], str] = {}
        for video, expressions in data.items():
            if not isinstance(expressions, dict):
                raise DataError(f"{path}: [{video!r}] must map expression ids to subset names")
            for exp_id, subset in expressions.items():
                if not isinstance(subset, str) or not subset.strip() or "/" in subset:
                    raise DataError(
                        f"{path}: [{video!r}][{exp_id!r}] must be a subset name (a non-empty "
                        f"string without '/'), got {subset!r}"
                    )
                labels[(str(video), str(exp_id))] = subset
        return cls(as_path(path), labels)

    @classmethod
    def find(cls, heldout: Path | None, dataset: str, split: str) -> ExpressionSubsets | None:
        """The subsets of ``dataset/split``: ``<heldout>/<dataset>/<split>/subsets.json``, or
        ``<heldout>/subsets.json`` when ``heldout`` is the split folder; None without."""
        if heldout is None:
            return None
        for folder in (split_dir(heldout, dataset, split), as_path(heldout)):
            if (folder / SUBSETS_FILE).is_file():
                return cls.read(folder / SUBSETS_FILE)
        return None

    @property
    def names(self) -> list[str]:
        """Every subset name of the file, sorted."""
        return sorted(set(self.labels.values()))

    def subset_of(self, row: Mapping[str, object]) -> str | None:
        """The subset of the expression a per-sequence row scores (None: unlabelled)."""
        expression = row_expression(row)
        return None if expression is None else self.labels.get(expression)

    def tag(self, rows: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        """Copies of ``rows`` with a ``subset`` column ("" where unlabelled)."""
        tagged = [{**row, SUBSET_COLUMN: self.subset_of(row) or ""} for row in rows]
        unlabelled = sum(1 for row in tagged if not row[SUBSET_COLUMN])
        if unlabelled:
            log.warning("%s: %d of %d scored rows have no subset", self.path, unlabelled, len(rows))
        return tagged

    def metrics(self, rows: Sequence[Mapping[str, object]]) -> dict[str, float | int]:
        """``n/<subset>`` for every subset of the file and J, F, J&F over its rows when
        n > 0, from rows tagged by :meth:`tag`."""
        out: dict[str, float | int] = {}
        for name in self.names:
            members = [row for row in rows if row.get(SUBSET_COLUMN) == name]
            if members:
                j = float(np.mean([float(row["J"]) for row in members]))  # type: ignore[arg-type]
                f = float(np.mean([float(row["F"]) for row in members]))  # type: ignore[arg-type]
                for metric, value in zip(SUBSET_METRICS, (j, f, (j + f) / 2), strict=True):
                    out[subset_key(metric, name)] = value
            out[subset_key("n", name)] = len(members)
        return out
