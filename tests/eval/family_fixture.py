"""A made-up dataset family, ``toy-vos``, defined entirely here: its raw format, its reader,
its evaluation family and a generator of a tiny copy. Nothing in ``refsam/`` knows it;
:func:`registered` plugs it in through the public registration functions only.

Raw format (``<root>/<split>/``): ``expressions.json`` (``{"videos": {vid: {"frames": [...],
"expressions": {exp_id: {"exp": text, "obj_id": [ids]}}}}}``; the ``hidden`` split leaves
``obj_id`` out), ``images/<vid>/<frame>.jpg`` and, for ``train``, ``labels/<vid>/<frame>.png``
label maps. ``hidden`` is scored by a (pretend) server: the held-out GT is
``<heldout>/hidden/{meta_expressions.json, labels/}`` and the zip format ``toy`` holds
``masks/<vid>/<exp_id>/<frame>.png``, the family's prediction layout.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from refsam.data.rle import encode_label
from refsam.data.sources import register, unregister
from refsam.data.sources.base import LoadResult, Source
from refsam.data.sources.raw_files import load_json, require_dir
from refsam.data.types import Expression, ObjectTrack, QuarantineItem
from refsam.eval import protocols
from refsam.eval.families import (
    ExpressionFamily,
    FolderOptions,
    register_family,
    unregister_family,
)
from refsam.eval.ground_truth import AnnotationsGT
from refsam.eval.io import read_png
from refsam.eval.prediction_layout import ExpressionLayout
from refsam.eval.protocols import ProtocolResult

NAME = "toy-vos"
SIZE = (40, 56)  # H, W
FRAMES = ("f0", "f1", "f2")
EXPRESSIONS = {"0": ["1"], "1": ["2"], "2": ["1", "2"]}  # exp_id -> objects (union)


class ToySource(Source):
    name = NAME
    raw_dir = NAME
    splits = ("train", "hidden")
    masked_splits = ("train",)

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        folder = require_dir(self.root / split, f"<root>/{split}/")
        self.meta_path = folder / "expressions.json"
        self.videos = load_json(self.meta_path, '{"videos": {...}}')["videos"]
        self.note_metadata(self.meta_path)
        self.image_dir, self.label_dir = folder / "images", folder / "labels"

    def video_ids(self) -> list[str]:
        return sorted(self.videos)

    def fingerprint_paths(self) -> list[Path]:
        return [self.image_dir, self.label_dir]

    def load_video(self, video: str) -> LoadResult:
        entry = self.videos[video]
        names = list(entry["frames"])
        paths = [self.image_dir / video / f"{n}.jpg" for n in names]
        loaded = self.read_frames(video, names, paths)
        if isinstance(loaded, QuarantineItem):
            return LoadResult(None, [loaded])
        frames, size = loaded
        expressions = [
            Expression(exp_id, item["exp"], [str(i) for i in item.get("obj_id", [])])
            for exp_id, item in sorted(entry["expressions"].items())
        ]
        obj_ids = sorted({i for e in expressions for i in e.obj_ids})
        objects = [ObjectTrack(i) for i in obj_ids]
        mask_paths: list[Path] = []
        if self.has_masks:
            read = self.read_label_maps(self.label_dir, video, names, size)
            if isinstance(read, QuarantineItem):
                return LoadResult(None, [read])
            mask_paths, maps = read
            objects = [ObjectTrack(i, None, encode_label(maps, int(i))) for i in obj_ids]
        return self.assemble(video=video, names=names, paths=paths, frames=frames, size=size,
                             objects=objects, expressions=expressions, quarantined=[],
                             mask_paths=mask_paths)  # fmt: skip


class ToyHeldout(AnnotationsGT):
    """Held-out label maps under ``labels/`` instead of ``Annotations/``."""

    subdir = "labels"


LAYOUT = ExpressionLayout(prefix="masks")


def score_toy(pred: Path, gt: Path, options: FolderOptions) -> ProtocolResult:
    """``refsam score --protocol toy``: ``gt`` a held-out split folder."""
    meta = json.loads((gt / "meta_expressions.json").read_text())["videos"]
    items = []
    for vid, entry in sorted(meta.items()):
        labels = np.stack([read_png(gt / "labels" / vid / f"{f}.png") for f in entry["frames"]])
        for exp_id, item in sorted(entry["expressions"].items()):
            target = np.isin(labels, [int(i) for i in item["obj_id"]])
            pred_masks = np.stack(LAYOUT.read(pred, vid, exp_id, entry["frames"]))
            items.append((vid, exp_id, target, pred_masks))
    return protocols.expressions("toy", items)


FAMILY = ExpressionFamily(
    datasets=(NAME,),
    protocol="toy",
    layout=LAYOUT,
    heldout=ToyHeldout,
    server_splits=("hidden",),
    zip_name="toy",
    folder_scorer=score_toy,
)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """``toy-vos`` known to ingest, config validation and evaluation while inside."""
    register(ToySource)
    register_family(FAMILY)
    try:
        yield
    finally:
        unregister_family(FAMILY)
        unregister(ToySource)


def _labels(video: int, frame: int) -> np.ndarray:
    """H×W label map: object 1 a box moving right, object 2 a box moving down."""
    labels = np.zeros(SIZE, np.uint8)
    x = 4 + 6 * frame + 3 * video
    labels[6:20, x : x + 14] = 1
    y = 14 + 5 * frame
    labels[y : y + 12, 32 + video : 50] = 2
    return labels


def write_toy_dataset(raw: Path, heldout: Path) -> dict[tuple[str, str, str], np.ndarray]:
    """Write two videos per split; returns the T×H×W GT of every (split, video, exp_id)."""
    truth: dict[tuple[str, str, str], np.ndarray] = {}
    rng = np.random.default_rng(0)
    for split_index, split in enumerate(ToySource.splits):
        videos: dict[str, dict] = {}
        for v in range(2):
            vid = f"{split}{v}"
            maps = [_labels(v + 2 * split_index, t) for t in range(len(FRAMES))]
            for name, labels in zip(FRAMES, maps, strict=True):
                rgb = rng.integers(0, 60, (*SIZE, 3), dtype=np.uint8)
                rgb[labels == 1] = (220, 40, 40)
                rgb[labels == 2] = (40, 40, 220)
                folder = raw / split / "images" / vid
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(folder / f"{name}.jpg", quality=95)
                label_dir = (raw / split if split == "train" else heldout / split) / "labels" / vid
                label_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(labels).save(label_dir / f"{name}.png")
            texts = {"0": "the red box", "1": "the blue box", "2": "both boxes"}
            videos[vid] = {
                "frames": list(FRAMES),
                "expressions": {
                    e: {"exp": texts[e], "obj_id": ids} for e, ids in EXPRESSIONS.items()
                },
            }
            for exp_id, ids in EXPRESSIONS.items():
                truth[(split, vid, exp_id)] = np.isin(np.stack(maps), [int(i) for i in ids])
        public = json.loads(json.dumps({"videos": videos}))
        if split == "hidden":
            (heldout / split / "meta_expressions.json").write_text(json.dumps(public))
            for entry in public["videos"].values():
                for item in entry["expressions"].values():
                    del item["obj_id"]
        (raw / split / "expressions.json").write_text(json.dumps(public))
    return truth
