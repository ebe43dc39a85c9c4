"""Typed records shared by the readers, the shard writer and the loaders (DATA.md).

One record type for every dataset: a :class:`VideoRecord` is one video (a RefCOCO image
is a 1-frame video) with its frames, its objects (per-frame COCO RLE masks, ``None``
where absent) and its expressions (each sentence of RefCOCO is one expression). Bad
items become :class:`QuarantineItem` values, never exceptions.

Batches handed to training and evaluation (docs/INTERFACES.md) are :class:`ClipBatch`
and :class:`EvalVideo`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

RLE = dict[str, Any]
"""COCO compressed RLE: ``{"size": [h, w], "counts": str}``."""


@dataclass(frozen=True)
class Expression:
    """A referring expression: ``obj_ids`` lists the objects whose union is its target."""

    exp_id: str
    text: str
    obj_ids: list[str]
    annotation_set: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "exp_id": self.exp_id,
            "text": self.text,
            "obj_ids": list(self.obj_ids),
            "annotation_set": self.annotation_set,
        }


@dataclass
class ObjectTrack:
    """One object; ``masks`` has one RLE (or None = absent) per frame, None without GT."""

    obj_id: str
    category: str | None = None
    masks: list[RLE | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.obj_id, "category": self.category, "masks": self.masks}


@dataclass
class VideoRecord:
    """One video sample as written to a shard (one WebDataset sample per video).

    ``frame_paths[i]`` holds the original JPEG of ``frame_names[i]`` (all H×W);
    ``void`` is one RLE (or None) per frame for datasets with void pixels (Ref-DAVIS17).
    ``sources`` maps each source file (relative to the raw root) to its sha256;
    ``frame_bytes`` (when loaded) are the original JPEG bytes of the frames.
    """

    dataset: str
    split: str
    video: str
    frame_names: list[str]
    frame_paths: list[Path]
    height: int
    width: int
    objects: list[ObjectTrack]
    expressions: list[Expression]
    void: list[RLE | None] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    frame_bytes: list[bytes] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """WebDataset key: the video id made dot-free (keys end at the first dot)."""
        return shard_key(self.video)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "video": self.video,
            "key": self.key,
            "frame_names": list(self.frame_names),
            "height": self.height,
            "width": self.width,
            "objects": [o.to_json() for o in self.objects],
            "void": self.void,
            "expressions": [e.to_json() for e in self.expressions],
            "sources": dict(sorted(self.sources.items())),
        }


def shard_key(video: str) -> str:
    """A WebDataset-safe key: dots and slashes replaced by underscores."""
    return video.replace(".", "_").replace("/", "_")


@dataclass(frozen=True)
class QuarantineItem:
    """A bad item kept out of the shards (DATA.md "Bad input"); ``unit`` is
    ``video``, ``object`` or ``expression``."""

    reason: str
    unit: str
    source: str
    message: str
    video: str | None = None
    obj_id: str | None = None
    exp_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "unit": self.unit,
            "video": self.video,
            "obj_id": self.obj_id,
            "exp_id": self.exp_id,
            "source": self.source,
            "message": self.message,
        }


@dataclass
class ClipBatch:
    """A training batch (docs/INTERFACES.md): G clips of T frames at S×S and B ≥ G
    expressions, each on one clip (several expressions of a video may share a clip).

    frames: uint8 G×T×3×S×S (resized to longest side S, zero-padded bottom/right);
    input_sizes: int64 G×2 (h, w before padding); masks: float32 B×T×S×S (union of the
    expression's objects); valid: bool B×T×S×S (False on padding and void); texts and
    meta: B entries; clip_index: int64 B, the clip of each expression (None: B = G, one
    clip per expression).
    """

    frames: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor
    input_sizes: torch.Tensor
    texts: list[str]
    meta: list[dict[str, Any]]
    clip_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class EvalExpression:
    exp_id: str
    text: str
    obj_ids: list[str]
    annotation_set: int | None


class MaskSequence(Sequence):
    """Per-frame H×W bool masks decoded lazily from RLE (all False where the RLE is None)."""

    def __init__(self, rles: list[RLE | None], height: int, width: int) -> None:
        self.rles = rles
        self.height = height
        self.width = width

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        from refsam.data.rle import decode_rle

        return decode_rle(self.rles[index], self.height, self.width)


@dataclass
class EvalObject:
    """An object of an evaluation video: ``masks[i]`` is frame i's H×W bool mask, or
    ``masks`` is None when the split has no ground truth."""

    obj_id: str
    category: str | None
    masks: MaskSequence | None


@dataclass
class EvalVideo:
    """A whole video in frame order at its original size (docs/INTERFACES.md)."""

    dataset: str
    split: str
    video: str
    frame_names: list[str]
    height: int
    width: int
    expressions: list[EvalExpression]
    objects: list[EvalObject]
    void: MaskSequence | None
    jpeg_bytes: list[bytes] = field(repr=False, default_factory=list)

    def frames(self) -> Iterator[np.ndarray]:
        """Decoded frames in order, each H×W×3 uint8 RGB (original JPEG, original size)."""
        from refsam.data.decode import decode_jpeg

        for data in self.jpeg_bytes:
            yield decode_jpeg(data)

    def target_masks(self, expression: EvalExpression) -> np.ndarray | None:
        """T×H×W bool ground truth of ``expression`` (union of its objects), None without GT."""
        by_id = {o.obj_id: o for o in self.objects}
        if not self.objects or any(
            by_id[i].masks is None for i in expression.obj_ids if i in by_id
        ):
            return None
        out = np.zeros((len(self.frame_names), self.height, self.width), dtype=bool)
        for obj_id in expression.obj_ids:
            masks = by_id[obj_id].masks
            assert masks is not None
            for t in range(len(out)):
                out[t] |= masks[t]
        return out
