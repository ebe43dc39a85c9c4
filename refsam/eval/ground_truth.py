"""Where an evaluation finds its videos and ground truth: the split's shards (with GT
where the published split has it) or held-out GT (DATA.md) beside them.

Each evaluation family (:mod:`refsam.eval.families`) names the held-out reader its
datasets use: :class:`AnnotationsGT` (``Annotations/<vid>/<frame>.png`` label maps) or
:class:`MaskDictGT` (``mask_dict.json`` RLEs per annotation id)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from refsam.data.rle import decode_rle
from refsam.data.types import EvalExpression, EvalVideo
from refsam.errors import DataError
from refsam.eval.io import VOID_LABEL, read_png
from refsam.paths import MANIFEST, has_manifest, split_dir
from refsam.storage import as_path


def shard_dir_for(shards: Path, dataset: str, split: str) -> Path:
    """``shards`` may be the shards root (holding ``<dataset>/<split>``) or the split dir."""
    shards = as_path(shards)
    expected = split_dir(shards, dataset, split)
    for candidate in (expected, shards):
        if has_manifest(candidate):
            return candidate
    raise DataError(
        f"{shards}: no shards of {dataset}/{split} (expected {expected / MANIFEST}; "
        "run `refsam ingest` first)"
    )


def heldout_dir_for(heldout: Path | None, dataset: str, split: str) -> Path | None:
    """``<heldout>/<dataset>/<split>`` (or ``heldout`` itself) when it exists."""
    if heldout is None:
        return None
    for candidate in (split_dir(heldout, dataset, split), as_path(heldout)):
        if (candidate / "meta_expressions.json").is_file():
            return candidate
    return None


def gt_labels(video: EvalVideo) -> np.ndarray:
    """T×H×W uint8 label map of the video's objects (label = int obj id), void = 255."""
    labels = np.zeros((len(video.frame_names), video.height, video.width), dtype=np.uint8)
    for obj in video.objects:
        if obj.masks is None:
            raise DataError(f"{video.dataset}/{video.split}/{video.video}: no ground truth")
        for t in range(len(labels)):
            labels[t][obj.masks[t]] = int(obj.obj_id)
    if video.void is not None:
        for t in range(len(labels)):
            labels[t][video.void[t]] = VOID_LABEL
    return labels


class HeldoutGT(ABC):
    """Held-out ground truth of a split whose shards carry none (DATA.md): the split's
    ``meta_expressions.json`` (with the ids the public file leaves out) says which objects
    each expression means; subclasses read the masks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = json.loads((folder / "meta_expressions.json").read_text(encoding="utf-8"))
        self.targets: dict[tuple[str, str], list[str]] = {}
        for vid, video in meta.get("videos", {}).items():
            for exp_id, exp in video.get("expressions", {}).items():
                ids = exp.get("anno_id", exp.get("obj_id"))
                ids = ids if isinstance(ids, list) else [ids]
                self.targets[(vid, str(exp_id))] = [str(i) for i in ids if i is not None]

    def target(self, video: EvalVideo, exp: EvalExpression) -> np.ndarray | None:
        """T×H×W bool union of the expression's objects (None when the video has no GT)."""
        obj_ids = self.targets.get((video.video, exp.exp_id)) or list(exp.obj_ids)
        if not obj_ids:
            return None
        shape = (len(video.frame_names), video.height, video.width)
        return self.union(video, obj_ids, np.zeros(shape, dtype=bool))

    @abstractmethod
    def union(self, video: EvalVideo, ids: list[str], out: np.ndarray) -> np.ndarray | None:
        """Fill ``out`` (T×H×W bool) with the union of the objects ``ids`` (None: no GT)."""


class AnnotationsGT(HeldoutGT):
    """``Annotations/<vid>/<frame>.png`` label maps (Ref-YouTube-VOS); a video without a
    folder has no GT, a missing frame is empty."""

    subdir = "Annotations"

    def union(self, video: EvalVideo, ids: list[str], out: np.ndarray) -> np.ndarray | None:
        folder = self.folder / self.subdir / video.video
        if not folder.is_dir():
            return None
        labels = [int(i) for i in ids]
        for t, name in enumerate(video.frame_names):
            path = folder / f"{name}.png"
            if path.is_file():
                out[t] = np.isin(read_png(path), labels)
        return out


class MaskDictGT(HeldoutGT):
    """``mask_dict.json``: per annotation id one COCO RLE (or null) per frame (MeViS)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.mask_dict = json.loads((folder / "mask_dict.json").read_text(encoding="utf-8"))

    def union(self, video: EvalVideo, ids: list[str], out: np.ndarray) -> np.ndarray | None:
        for anno in ids:
            for t, rle in enumerate(self.mask_dict.get(str(anno), [])[: out.shape[0]]):
                if rle:
                    out[t] |= decode_rle(rle, video.height, video.width)
        return out
