"""MeViS evaluation: ``<vid>/<exp_id>/<frame>.png`` (0/255), scored per expression against the
shard's GT (``valid_u``) or the held-out ``mask_dict.json`` (``valid``); valid is scored by
the server (``mevis`` zip: the same layout at the zip root).

``refsam score --protocol mevis``: ``--gt`` a split folder (``meta_expressions.json`` +
``mask_dict.json``), ``--pred`` ``<vid>/<exp_id>/<frame>.png``; missing video/expression
folders score 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from refsam.data.sources.mevis import MeViS
from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.families import register_family
from refsam.eval.families.base import ExpressionFamily, FolderOptions
from refsam.eval.ground_truth import MaskDictGT
from refsam.eval.io import read_png_stack
from refsam.eval.layouts import decode_coco_rle, frame_paths, progress, read_json, require_dir
from refsam.eval.prediction_layout import ExpressionLayout
from refsam.eval.protocols import ProtocolResult
from refsam.storage import as_path

log = logging.getLogger(__name__)
LAYOUT = ExpressionLayout()


def _frame_size(video: dict[str, Any], masks: dict[str, Any]) -> tuple[int, int] | None:
    """(H, W) of a video from the first non-empty RLE of any of its expressions."""
    for expression in video["expressions"].values():
        for anno_id in expression.get("anno_id", []):
            for rle in masks.get(str(anno_id)) or []:
                if rle:
                    return int(rle["size"][0]), int(rle["size"][1])
    return None


def _jpeg_size(folder: Path, frames: Sequence[str]) -> tuple[int, int] | None:
    """(H, W) of the first listed frame image, when the split folder has it."""
    path = folder / f"{frames[0]}.jpg" if frames else None
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except (OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: unreadable frame image ({exc})") from None


def iter_mevis(pred: Path, gt: Path) -> Iterator[protocols.ExpressionItem]:
    """(video, exp_id, GT union T×H×W, prediction or None) for every expression of a split."""
    meta = read_json(gt / "meta_expressions.json")
    masks = read_json(gt / "mask_dict.json")
    try:
        videos: dict[str, Any] = meta["videos"]
    except (KeyError, TypeError):
        raise UserError(f"{gt / 'meta_expressions.json'}: expected {{'videos': {{...}}}}") from None
    for name in progress(sorted(videos), "videos"):
        video = videos[name]
        frames = list(video["frames"])
        size = _frame_size(video, masks) or _jpeg_size(gt / "JPEGImages" / name, frames)
        for exp_id, expression in video["expressions"].items():
            exp_dir = LAYOUT.expression_dir(pred, name, str(exp_id))
            pred_masks = None
            if exp_dir.is_dir():
                paths = frame_paths(exp_dir, frames)
                pred_masks = read_png_stack(paths, size=size) > 0
                size = size or pred_masks.shape[1:]
            else:
                log.warning("%s: no prediction folder, expression scored 0", exp_dir)
            if size is None:
                raise UserError(f"{gt}/mask_dict.json: no mask gives the size of video {name}")
            union = np.zeros((len(frames), *size), dtype=bool)
            for anno_id in expression["anno_id"]:
                key = str(anno_id)
                if key not in masks:
                    raise UserError(f"{gt}/mask_dict.json: no masks for anno_id {key}")
                for index, rle in enumerate(masks[key][: len(frames)]):
                    if rle:
                        union[index] |= decode_coco_rle(rle, f"{gt}/mask_dict.json[{key}][{index}]")
            yield name, str(exp_id), union, pred_masks


def score_mevis(pred: Path, gt: Path) -> ProtocolResult:
    """MeViS from folders (``valid_u`` or held-out ``valid``)."""
    require_dir(as_path(gt), "ground-truth split")
    require_dir(as_path(pred), "prediction")
    return protocols.mevis(iter_mevis(as_path(pred), as_path(gt)))


def _score_folder(pred: Path, gt: Path, options: FolderOptions) -> ProtocolResult:
    return score_mevis(pred, gt)


FAMILY = register_family(
    ExpressionFamily(
        datasets=(MeViS.name,),
        protocol="mevis",
        layout=LAYOUT,
        heldout=MaskDictGT,
        server_splits=("valid",),
        zip_name="mevis",
        folder_scorer=_score_folder,
    )
)
