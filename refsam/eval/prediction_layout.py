"""Where predicted masks live on disk: one definition per layout.

The same object writes a family's predictions (the evaluator), reads them back (overlays,
``refsam score``) and names the members of a server zip (:mod:`refsam.eval.submission`),
so a path is spelled once:

- :class:`ExpressionLayout` — one 0/255 PNG per expression and frame,
  ``[<prefix>/]<video>/<exp_id>/<frame>.png`` (Ref-YouTube-VOS: prefix ``Annotations``;
  MeViS: none);
- :class:`AnnotationSetLayout` — one label-map PNG per annotation set and frame,
  ``anno_<k>/<video>/<frame>.png`` (Ref-DAVIS17: four sets);
- :class:`SentenceLayout` — one 0/255 PNG per sentence, ``<sent_id>.png`` (RefCOCO family).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsam.eval.io import read_binary_mask, read_png, write_binary_png, write_label_png
from refsam.storage import as_path


@dataclass(frozen=True)
class ExpressionLayout:
    """``[<prefix>/]<video>/<exp_id>/<frame>.png``, binary masks (0/255 grey PNGs)."""

    prefix: str = ""

    @property
    def _head(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def member(self, video: str, exp_id: str, frame: str) -> str:
        """The POSIX path of one mask relative to the prediction folder (a zip member)."""
        return f"{self._head}{video}/{exp_id}/{frame}.png"

    def member_parts(self, member: str) -> list[str] | None:
        """``member`` split at ``/`` below the prefix (``[video, exp_id, "<frame>.png"]``
        when well formed); None when it is not under the prefix."""
        head = self._head
        return member[len(head) :].split("/") if member.startswith(head) else None

    def root(self, pred_dir: Path) -> Path:
        """The folder holding ``<video>/`` folders under ``pred_dir``."""
        return as_path(pred_dir) / self.prefix if self.prefix else as_path(pred_dir)

    def found_root(self, pred_dir: Path) -> Path:
        """:meth:`root` when it exists, else ``pred_dir`` itself (folders given by users
        may leave the prefix out)."""
        root = self.root(pred_dir)
        return root if root.is_dir() else as_path(pred_dir)

    def under(self, root: Path, video: str, exp_id: str) -> Path:
        """The folder of one expression's frames below a :meth:`root`."""
        return as_path(root) / video / exp_id

    def expression_dir(self, pred_dir: Path, video: str, exp_id: str) -> Path:
        return self.under(self.root(pred_dir), video, exp_id)

    def write(
        self, pred_dir: Path, video: str, exp_id: str, frames: Sequence[str], masks: np.ndarray
    ) -> None:
        """Write T×H×W bool ``masks`` as one PNG per frame name."""
        folder = self.expression_dir(pred_dir, video, exp_id)
        for name, mask in zip(frames, masks, strict=True):
            write_binary_png(folder / f"{name}.png", mask)

    def read(
        self, pred_dir: Path, video: str, exp_id: str, frames: Sequence[str]
    ) -> list[np.ndarray]:
        """The H×W bool masks of one expression, in frame order."""
        folder = self.expression_dir(pred_dir, video, exp_id)
        return [read_binary_mask(folder / f"{name}.png") for name in frames]


@dataclass(frozen=True)
class AnnotationSetLayout:
    """``anno_<k>/<video>/<frame>.png`` for k in 0 … n_sets − 1, label maps (palette PNGs
    whose pixel values are object ids, 0 background)."""

    n_sets: int

    def set_name(self, index: int) -> str:
        return f"anno_{index}"

    def set_dir(self, pred_dir: Path, index: int) -> Path:
        return as_path(pred_dir) / self.set_name(index)

    def set_dirs(self, pred_dir: Path) -> list[Path]:
        return [self.set_dir(pred_dir, k) for k in range(self.n_sets)]

    def write(
        self, pred_dir: Path, index: int, video: str, frames: Sequence[str], labels: np.ndarray
    ) -> None:
        """Write a T×H×W uint8 label map of annotation set ``index``."""
        folder = self.set_dir(pred_dir, index) / video
        for name, frame_labels in zip(frames, labels, strict=True):
            write_label_png(folder / f"{name}.png", frame_labels)

    def read(
        self, pred_dir: Path, index: int, video: str, frames: Sequence[str]
    ) -> list[np.ndarray]:
        """The H×W uint8 label maps of one video in set ``index``, in frame order."""
        folder = self.set_dir(pred_dir, index) / video
        return [read_png(folder / f"{name}.png") for name in frames]


@dataclass(frozen=True)
class SentenceLayout:
    """``<sent_id>.png``, one binary mask per sentence at the image's size."""

    def path(self, pred_dir: Path, sent_id: str) -> Path:
        return as_path(pred_dir) / f"{sent_id}.png"

    def write(self, pred_dir: Path, sent_id: str, mask: np.ndarray) -> None:
        write_binary_png(self.path(pred_dir, sent_id), mask)

    def read(self, pred_dir: Path, sent_id: str) -> np.ndarray:
        return read_binary_mask(self.path(pred_dir, sent_id))


@dataclass(frozen=True)
class ZipFormat:
    """A server's submission zip: its name (``refsam`` API and CLI) and member layout."""

    name: str
    layout: ExpressionLayout
