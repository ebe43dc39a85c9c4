"""Ref-DAVIS17 evaluation: each annotation set of expressions is one unsupervised DAVIS
submission. Per set and frame, the probabilities of the set's expressions are merged into
one label map (background score 0.1, argmax; label = the expression's object id) written as
``anno_<k>/<seq>/<frame>.png``; each set is scored against the shard's GT (void excluded)
and the reported numbers are the mean over sets (:func:`~refsam.eval.protocols.ref_davis17`).
Each per-object row names the expression of its set that refers to the object (``exp_id``),
so expression subsets (:mod:`refsam.eval.subsets`) average the object rows of all sets.

``refsam score --protocol ref-davis17``: ``--pred`` holds ``anno_0 …``, each
``<seq>/<frame>.png``; ``--gt`` as for ``davis``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refsam.data.sources.ref_davis17 import RefDAVIS17
from refsam.data.types import EvalVideo
from refsam.errors import DataError
from refsam.eval import protocols
from refsam.eval.families import register_family
from refsam.eval.families.base import (
    EvalFamily,
    FamilyRun,
    FolderOptions,
    FolderScorer,
    has_ground_truth,
)
from refsam.eval.ground_truth import HeldoutGT, gt_labels
from refsam.eval.layouts import iter_davis, require_dir, resolve_davis_gt
from refsam.eval.prediction_layout import AnnotationSetLayout
from refsam.eval.protocols import ProtocolResult, VoidMode

if TYPE_CHECKING:
    from refsam.eval.predictor import FramePrediction

LAYOUT = AnnotationSetLayout(n_sets=RefDAVIS17.annotation_sets)


def score_ref_davis17(
    pred: Path, gt: Path, *, sequences: Sequence[str] | None = None, void: VoidMode = "exclude"
) -> ProtocolResult:
    """Ref-DAVIS17 from folders: ``pred/anno_<k>`` each scored with the unsupervised protocol."""
    gt, names = resolve_davis_gt(gt, sequences)
    sets = LAYOUT.set_dirs(pred)
    expected = f"{LAYOUT.set_name(0)} … {LAYOUT.set_name(LAYOUT.n_sets - 1)}"
    for folder in sets:
        require_dir(folder, f"annotation-set prediction (expected {expected})")
    return protocols.ref_davis17(
        [iter_davis(folder, gt, names, unsupervised=True) for folder in sets], void=void
    )


def _score_folder(pred: Path, gt: Path, options: FolderOptions) -> ProtocolResult:
    return score_ref_davis17(pred, gt, sequences=options.sequences, void=options.void)


@dataclass(frozen=True)
class AnnotationSetFamily(EvalFamily):
    """Label maps per annotation set (module docstring); GT from the shards only."""

    datasets: tuple[str, ...]
    protocol: str
    layout: AnnotationSetLayout
    folder_scorer: FolderScorer | None = None

    def start(self, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None) -> FamilyRun:
        return _AnnotationSetRun(self.layout, pred_dir, threshold=threshold, heldout=heldout)

    def read_predictions(self, pred_dir: Path, video: EvalVideo) -> list[list[np.ndarray]]:
        out = []
        for exp in video.expressions:
            if exp.annotation_set is None:
                raise DataError(f"{video.video}/{exp.exp_id}: expression without annotation set")
            label = int(exp.obj_ids[0])
            maps = self.layout.read(pred_dir, exp.annotation_set, video.video, video.frame_names)
            out.append([labels == label for labels in maps])
        return out


class _AnnotationSetRun(FamilyRun):
    def __init__(
        self,
        layout: AnnotationSetLayout,
        pred_dir: Path,
        *,
        threshold: float,
        heldout: HeldoutGT | None,
    ) -> None:
        super().__init__(pred_dir, threshold=threshold, heldout=heldout)
        self.layout = layout
        self.sets: list[list[protocols.DavisItem]] = [[] for _ in range(layout.n_sets)]
        self.exp_ids: dict[tuple[int, str, int], str] = {}  # (set, video, object) -> exp_id

    def add_video(self, video: EvalVideo, frames: Iterable[FramePrediction]) -> None:
        exps = video.expressions
        n_sets = self.layout.n_sets
        rows_of = [[i for i, e in enumerate(exps) if e.annotation_set == k] for k in range(n_sets)]
        labels_of = [[int(exps[i].obj_ids[0]) for i in rows] for rows in rows_of]
        shape = (n_sets, len(video.frame_names), video.height, video.width)
        pred = np.zeros(shape, dtype=np.uint8)
        for frame in frames:
            for k, rows in enumerate(rows_of):
                if rows:
                    pred[k, frame.index] = protocols.label_map_from_probs(
                        frame.probs[rows], labels_of[k], threshold=self.threshold
                    )
        gt = gt_labels(video) if has_ground_truth(video) else None
        for k, rows in enumerate(rows_of):
            if not rows:
                continue
            self.layout.write(self.pred_dir, k, video.video, video.frame_names, pred[k])
            if gt is not None:
                self.sets[k].append((video.video, gt, pred[k]))
                for i, label in zip(rows, labels_of[k], strict=True):
                    self.exp_ids[(k, video.video, label)] = exps[i].exp_id

    def score(self) -> ProtocolResult | None:
        """The Ref-DAVIS17 result; each per-object row also names the expression of its
        set that refers to the object (``exp_id``, empty when none does)."""
        scored = [k for k, items in enumerate(self.sets) if items]
        if not scored:
            return None
        result = protocols.ref_davis17([self.sets[k] for k in scored])
        for k, rows in zip(scored, result.tables.values(), strict=True):
            for row in rows:
                key = (k, str(row["sequence"]), int(row["object"]))  # type: ignore[call-overload]
                row["exp_id"] = self.exp_ids.get(key, "")
        return result

    def take(self) -> object:
        kept = (self.sets, self.exp_ids)
        self.sets, self.exp_ids = [[] for _ in self.sets], {}
        return kept

    def put(self, kept: object) -> None:
        sets, exp_ids = kept  # type: ignore[misc]
        for items, more in zip(self.sets, sets, strict=True):
            items += more
        self.exp_ids.update(exp_ids)


FAMILY = register_family(
    AnnotationSetFamily(
        datasets=(RefDAVIS17.name,),
        protocol="ref-davis17",
        layout=LAYOUT,
        folder_scorer=_score_folder,
    )
)
