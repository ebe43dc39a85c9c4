"""RefCOCO family evaluation (RefCOCO, RefCOCO+, RefCOCOg): one image per sample, one
``<sent_id>.png`` (0/255) per sentence, scored against the shard's GT with mIoU, oIoU and
Prec@X (:func:`~refsam.eval.protocols.refcoco`).

``refsam score --protocol refcoco``: ``<sent_id>.png`` binary masks at the image's size on
both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refsam.data.sources.refcoco import RefCOCO, RefCOCOg, RefCOCOPlus
from refsam.data.types import EvalVideo
from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.families import register_family
from refsam.eval.families.base import (
    EvalFamily,
    FamilyRun,
    FolderOptions,
    FolderScorer,
    collect_masks,
    has_ground_truth,
)
from refsam.eval.ground_truth import HeldoutGT
from refsam.eval.io import list_pngs, read_png
from refsam.eval.layouts import progress, require_dir
from refsam.eval.prediction_layout import SentenceLayout
from refsam.eval.protocols import ProtocolResult
from refsam.storage import as_path

if TYPE_CHECKING:
    from refsam.eval.predictor import FramePrediction

LAYOUT = SentenceLayout()


def iter_refcoco(pred: Path, gt: Path) -> Iterator[protocols.SentenceItem]:
    names = list_pngs(gt)
    if not names:
        raise UserError(f"{gt}: no <sent_id>.png ground-truth masks")
    for name in progress(names, "sentences"):
        gt_mask = read_png(LAYOUT.path(gt, name)) > 0
        pred_file = LAYOUT.path(pred, name)
        if not pred_file.is_file():
            raise UserError(f"{pred_file}: prediction mask missing")
        pred_mask = read_png(pred_file) > 0
        if pred_mask.shape != gt_mask.shape:
            raise UserError(
                f"{pred_file}: size {pred_mask.shape[1]}x{pred_mask.shape[0]}, expected "
                f"{gt_mask.shape[1]}x{gt_mask.shape[0]} (WxH)"
            )
        yield name, gt_mask, pred_mask


def score_refcoco(pred: Path, gt: Path) -> ProtocolResult:
    """RefCOCO family from ``<sent_id>.png`` folders."""
    require_dir(as_path(gt), "ground-truth")
    require_dir(as_path(pred), "prediction")
    return protocols.refcoco(iter_refcoco(as_path(pred), as_path(gt)))


def _score_folder(pred: Path, gt: Path, options: FolderOptions) -> ProtocolResult:
    return score_refcoco(pred, gt)


@dataclass(frozen=True)
class SentenceFamily(EvalFamily):
    """One mask per sentence of a one-frame sample (module docstring)."""

    datasets: tuple[str, ...]
    protocol: str
    layout: SentenceLayout
    folder_scorer: FolderScorer | None = None

    def start(self, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None) -> FamilyRun:
        return _SentenceRun(self.layout, pred_dir, threshold=threshold, heldout=heldout)

    def read_predictions(self, pred_dir: Path, video: EvalVideo) -> list[list[np.ndarray]]:
        return [[self.layout.read(pred_dir, exp.exp_id)] for exp in video.expressions]


class _SentenceRun(FamilyRun):
    def __init__(
        self, layout: SentenceLayout, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None
    ) -> None:
        super().__init__(pred_dir, threshold=threshold, heldout=heldout)
        self.layout = layout
        self.items: list[protocols.SentenceItem] = []

    def add_video(self, video: EvalVideo, frames: Iterable[FramePrediction]) -> None:
        masks = collect_masks(video, frames)
        has_gt = has_ground_truth(video)
        for i, exp in enumerate(video.expressions):
            self.layout.write(self.pred_dir, exp.exp_id, masks[i, 0])
            target = video.target_masks(exp) if has_gt else None
            if target is not None:
                self.items.append((exp.exp_id, target[0], masks[i, 0]))

    def score(self) -> ProtocolResult | None:
        return protocols.refcoco(self.items) if self.items else None

    def take(self) -> object:
        kept, self.items = self.items, []
        return kept

    def put(self, kept: object) -> None:
        self.items += kept  # type: ignore[arg-type]


FAMILY = register_family(
    SentenceFamily(
        datasets=tuple(source.name for source in (RefCOCO, RefCOCOPlus, RefCOCOg)),
        protocol="refcoco",
        layout=LAYOUT,
        folder_scorer=_score_folder,
    )
)
