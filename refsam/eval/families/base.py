"""The evaluation-family contract: how the datasets of one benchmark format are evaluated.

A family is one object registered in :mod:`refsam.eval.families` beside its datasets'
:class:`~refsam.data.sources.base.Source`. It carries all that the evaluator,
``refsam score`` and the submission writer know about those datasets:

- ``layout``: where predictions go (:mod:`refsam.eval.prediction_layout`: the same object
  writes, reads back and names zip members);
- :meth:`EvalFamily.start`: a :class:`FamilyRun` that writes each video's predictions and
  keeps what the family's protocol (:mod:`refsam.eval.protocols`) scores;
- :meth:`EvalFamily.heldout_gt`: the ground truth of splits whose shards carry none;
- :meth:`EvalFamily.submission_format`: the server zip of server-scored splits;
- ``folder_scorer``: ``refsam score --protocol <protocol>`` over PNG folders (optional).

:class:`ExpressionFamily` (one binary mask per expression and frame, scored per
expression) serves Ref-YouTube-VOS, MeViS and any dataset in that shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refsam.data.types import EvalVideo
from refsam.eval import protocols
from refsam.eval.ground_truth import HeldoutGT
from refsam.eval.prediction_layout import ExpressionLayout, ZipFormat
from refsam.eval.protocols import ProtocolResult, VoidMode

if TYPE_CHECKING:
    from refsam.eval.predictor import FramePrediction


@dataclass(frozen=True)
class FolderOptions:
    """Options of ``refsam score`` that some folder protocols use."""

    sequences: Sequence[str] | None = None
    meta: Path | None = None
    void: VoidMode = "exclude"


FolderScorer = Callable[[Path, Path, FolderOptions], ProtocolResult]
"""(prediction folder, ground-truth folder, options) → scores."""


def has_ground_truth(video: EvalVideo) -> bool:
    """Whether the shard carries masks for every object of ``video``."""
    return bool(video.objects) and all(o.masks is not None for o in video.objects)


def collect_masks(video: EvalVideo, frames: Iterable[FramePrediction]) -> np.ndarray:
    """E×T×H×W bool masks of the video's expressions from the predictor's frames."""
    shape = (len(video.expressions), len(video.frame_names), video.height, video.width)
    masks = np.zeros(shape, dtype=bool)
    for frame in frames:
        masks[:, frame.index] = frame.masks
    return masks


class FamilyRun(ABC):
    """One evaluation of one split: writes predictions under ``pred_dir`` and collects the
    items its protocol scores."""

    def __init__(self, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None) -> None:
        self.pred_dir = Path(pred_dir)
        self.threshold = threshold
        self.heldout = heldout

    @abstractmethod
    def add_video(self, video: EvalVideo, frames: Iterable[FramePrediction]) -> None:
        """Consume the predictor's frames of ``video`` (its expressions in order), write
        the predictions and keep what is scored."""

    @abstractmethod
    def score(self) -> ProtocolResult | None:
        """The protocol's result, None when no video had ground truth."""

    def take(self) -> object:
        r"""What the run kept since the last call (picklable), forgotten here: evaluation
        on several ranks sends each video's share to rank 0, which :meth:`put`\ s them back
        in video order. A family without it evaluates on one process only."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate on several ranks")

    def put(self, kept: object) -> None:
        """Add back what :meth:`take` returned (on rank 0)."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate on several ranks")


class EvalFamily(ABC):
    """How the datasets ``datasets`` are evaluated (module docstring)."""

    datasets: tuple[str, ...]
    protocol: str
    folder_scorer: FolderScorer | None = None

    @abstractmethod
    def start(self, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None) -> FamilyRun:
        """A run writing under ``pred_dir``; ``threshold`` is the mask probability threshold."""

    @abstractmethod
    def read_predictions(self, pred_dir: Path, video: EvalVideo) -> list[list[np.ndarray]]:
        """Per expression of ``video``, its H×W bool masks read back from ``pred_dir``."""

    def heldout_gt(self, folder: Path | None) -> HeldoutGT | None:
        """The held-out GT reader of a split folder (None: the family has none)."""
        return None

    @property
    def zip_format(self) -> ZipFormat | None:
        """The server's submission zip format (None: no server)."""
        return None

    def submission_format(self, split: str) -> ZipFormat | None:
        """The zip format when ``split`` is scored by a server, else None."""
        return None


@dataclass(frozen=True)
class ExpressionFamily(EvalFamily):
    """One binary mask per expression and frame in ``layout``; J and F per expression over
    all listed frames, averaged over expressions (:func:`~refsam.eval.protocols.expressions`
    under the name ``protocol``). Ground truth: the shard's masks, else the held-out
    reader ``heldout``. Splits in ``server_splits`` get a ``zip_name`` submission zip in the
    same layout."""

    datasets: tuple[str, ...]
    protocol: str
    layout: ExpressionLayout
    heldout: type[HeldoutGT] | None = None
    server_splits: tuple[str, ...] = ()
    zip_name: str | None = None
    folder_scorer: FolderScorer | None = None

    def start(self, pred_dir: Path, *, threshold: float, heldout: HeldoutGT | None) -> FamilyRun:
        return _ExpressionRun(self, pred_dir, threshold=threshold, heldout=heldout)

    def read_predictions(self, pred_dir: Path, video: EvalVideo) -> list[list[np.ndarray]]:
        return [
            self.layout.read(pred_dir, video.video, exp.exp_id, video.frame_names)
            for exp in video.expressions
        ]

    def heldout_gt(self, folder: Path | None) -> HeldoutGT | None:
        return self.heldout(folder) if folder is not None and self.heldout is not None else None

    @property
    def zip_format(self) -> ZipFormat | None:
        return ZipFormat(self.zip_name, self.layout) if self.zip_name else None

    def submission_format(self, split: str) -> ZipFormat | None:
        return self.zip_format if split in self.server_splits else None


class _ExpressionRun(FamilyRun):
    def __init__(
        self,
        family: ExpressionFamily,
        pred_dir: Path,
        *,
        threshold: float,
        heldout: HeldoutGT | None,
    ) -> None:
        super().__init__(pred_dir, threshold=threshold, heldout=heldout)
        self.family = family
        self.items: list[protocols.ExpressionItem] = []

    def add_video(self, video: EvalVideo, frames: Iterable[FramePrediction]) -> None:
        masks = collect_masks(video, frames)
        has_gt = has_ground_truth(video)
        for i, exp in enumerate(video.expressions):
            self.family.layout.write(
                self.pred_dir, video.video, exp.exp_id, video.frame_names, masks[i]
            )
            target = video.target_masks(exp) if has_gt else None
            if target is None and self.heldout is not None:
                target = self.heldout.target(video, exp)
            if target is not None:
                self.items.append((video.video, exp.exp_id, target, masks[i]))

    def score(self) -> ProtocolResult | None:
        return protocols.expressions(self.family.protocol, self.items) if self.items else None

    def take(self) -> object:
        kept, self.items = self.items, []
        return kept

    def put(self, kept: object) -> None:
        self.items += kept  # type: ignore[arg-type]
