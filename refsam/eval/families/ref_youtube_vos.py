"""Ref-YouTube-VOS evaluation: ``Annotations/<vid>/<exp_id>/<frame>.png`` (0/255), scored per
expression against the shard's GT or the held-out ``Annotations/`` label maps; valid and
test are scored by the challenge server (``ytvos`` zip: the same layout at the zip root).

``refsam score --protocol ytvos``: ``--gt`` a folder with ``Annotations/<vid>/<frame>.png``
(palette) and the split's ``meta_expressions.json`` (or ``--meta``); ``--pred``
``[Annotations/]<vid>/<exp_id>/<frame>.png``. Only videos with a GT folder are scored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refsam.data.sources.ref_youtube_vos import RefYouTubeVOS
from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.families import register_family
from refsam.eval.families.base import ExpressionFamily, FolderOptions
from refsam.eval.ground_truth import AnnotationsGT
from refsam.eval.io import read_png_stack
from refsam.eval.layouts import frame_paths, progress, read_json, require_dir
from refsam.eval.prediction_layout import ExpressionLayout
from refsam.eval.protocols import ProtocolResult
from refsam.storage import as_path

log = logging.getLogger(__name__)
LAYOUT = ExpressionLayout(prefix="Annotations")


def iter_ytvos(pred: Path, gt: Path, meta_file: Path) -> Iterator[protocols.ExpressionItem]:
    """(video, exp_id, GT T×H×W of the expression's object, prediction) per expression."""
    annotations = gt / AnnotationsGT.subdir if (gt / AnnotationsGT.subdir).is_dir() else gt
    pred_root = LAYOUT.found_root(pred)
    meta = read_json(meta_file)
    try:
        videos: dict[str, Any] = meta["videos"]
    except (KeyError, TypeError):
        raise UserError(f"{meta_file}: expected {{'videos': {{...}}}}") from None
    scored = [v for v in sorted(videos) if (annotations / v).is_dir()]
    if not scored:
        raise UserError(f"{annotations}: no ground-truth folder for any video of {meta_file}")
    if len(scored) < len(videos):
        log.info(
            "ytvos: %d of %d videos have ground truth; scoring those", len(scored), len(videos)
        )
    for name in progress(scored, "videos"):
        frames = list(videos[name]["frames"])
        gt_labels = read_png_stack(frame_paths(annotations / name, frames))
        for exp_id, expression in videos[name]["expressions"].items():
            obj_id = int(expression["obj_id"])
            exp_dir = LAYOUT.under(pred_root, name, str(exp_id))
            require_dir(exp_dir, "prediction expression")
            pred_masks = read_png_stack(frame_paths(exp_dir, frames), size=gt_labels.shape[1:])
            yield name, str(exp_id), gt_labels == obj_id, pred_masks > 0


def score_ytvos(pred: Path, gt: Path, meta: Path | None = None) -> ProtocolResult:
    """Ref-YouTube-VOS local scoring; ``meta`` defaults to ``gt/meta_expressions.json``."""
    require_dir(as_path(gt), "ground-truth")
    require_dir(as_path(pred), "prediction")
    meta_file = as_path(meta) if meta is not None else as_path(gt) / "meta_expressions.json"
    return protocols.ytvos(iter_ytvos(as_path(pred), as_path(gt), meta_file))


def _score_folder(pred: Path, gt: Path, options: FolderOptions) -> ProtocolResult:
    return score_ytvos(pred, gt, options.meta)


FAMILY = register_family(
    ExpressionFamily(
        datasets=(RefYouTubeVOS.name,),
        protocol="ytvos",
        layout=LAYOUT,
        heldout=AnnotationsGT,
        server_splits=("valid", "test"),
        zip_name="ytvos",
        folder_scorer=_score_folder,
    )
)
