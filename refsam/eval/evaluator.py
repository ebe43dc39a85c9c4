"""Evaluate a checkpoint (or an in-memory model) on one dataset split.

Online inference with :class:`~refsam.eval.predictor.OnlinePredictor` (one encoder pass
per frame for all of a video's expressions), masks written as PNGs in the protocol's
layout under ``out/predictions/``, scored through :mod:`refsam.eval.protocols`:

- ``ref-davis17``: all four annotation sets in one pass; per set the objects' probabilities
  are merged into a label map (background 0.1, argmax) → ``anno_<k>/<seq>/<frame>.png``;
  unsupervised DAVIS protocol per set against the shard's GT (void excluded), mean of sets.
- ``ref-youtube-vos``: ``Annotations/<vid>/<exp_id>/<frame>.png`` (0/255); scored against
  the shard's GT, else the held-out demo GT (``<heldout>/ref-youtube-vos/<split>``);
  the submission zip for valid/test.
- ``mevis``: ``<vid>/<exp_id>/<frame>.png``; shard GT or held-out ``mask_dict.json``;
  submission zip for valid.
- RefCOCO family: ``<sent_id>.png``; mIoU, oIoU, Prec@X.

Also written: ``metrics.json``, ``per_sequence.csv`` and contact-sheet overlays of the
worst sequences (``overlays/``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refsam.data.types import EvalVideo
from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.ground_truth import (
    HeldoutGT,
    gt_labels,
    heldout_dir_for,
    limited_videos,
    shard_dir_for,
)
from refsam.eval.io import (
    read_binary_mask,
    read_png,
    write_binary_png,
    write_label_png,
)
from refsam.eval.predictor import OnlinePredictor
from refsam.eval.submission import zip_prediction_dir
from refsam.eval.visualize import render_sequence_sheet
from refsam.modeling.checkpoint import model_from_checkpoint
from refsam.modeling.refsam import RefSAM
from refsam.runlog import RunLogger

log = logging.getLogger(__name__)

REFCOCO = ("refcoco", "refcoco+", "refcocog")
N_REF_DAVIS_SETS = 4
SERVER_SPLITS = {
    ("ref-youtube-vos", "valid"): "ytvos",
    ("ref-youtube-vos", "test"): "ytvos",
    ("mevis", "valid"): "mevis",
}
"""Splits scored by a server: their submission zip layout."""


@dataclass
class EvalResult:
    """What :func:`evaluate` produced (paths under ``out``)."""

    dataset: str
    split: str
    metrics: dict[str, float | int | str]
    per_sequence_csv: Path
    metrics_json: Path
    predictions: Path
    submission: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    threshold: float = 0.5


class _Run:
    """One evaluation: predictions, in-memory scoring items and per-video timing."""

    def __init__(
        self, predictor: OnlinePredictor, dataset: str, pred_dir: Path, heldout: HeldoutGT | None
    ) -> None:
        self.predictor = predictor
        self.dataset = dataset
        self.pred_dir = pred_dir
        self.heldout = heldout
        self.texts: Mapping[tuple[str, str], str] = {}
        self.davis_sets: list[list[protocols.DavisItem]] = [[] for _ in range(N_REF_DAVIS_SETS)]
        self.expression_items: list[protocols.ExpressionItem] = []
        self.sentence_items: list[protocols.SentenceItem] = []
        self.frames = 0

    def video(self, video: EvalVideo) -> None:
        exps = video.expressions
        if not exps:
            return
        has_gt = bool(video.objects) and all(o.masks is not None for o in video.objects)
        n = len(video.frame_names)
        if self.dataset == "ref-davis17":
            sets = [[i for i, e in enumerate(exps) if e.annotation_set == k] for k in range(4)]
            pred_sets = np.zeros((N_REF_DAVIS_SETS, n, video.height, video.width), dtype=np.uint8)
        else:
            masks = np.zeros((len(exps), n, video.height, video.width), dtype=bool)
        texts = [self.texts.get((video.video, e.exp_id), e.text) for e in exps]
        for frame in self.predictor.track(video.frames(), texts):
            self.frames += 1
            if self.dataset == "ref-davis17":
                for k, rows in enumerate(sets):
                    if rows:
                        labels = [int(exps[i].obj_ids[0]) for i in rows]
                        pred_sets[k, frame.index] = protocols.label_map_from_probs(
                            frame.probs[rows], labels, threshold=self.predictor.threshold
                        )
            else:
                masks[:, frame.index] = frame.masks
        if self.dataset == "ref-davis17":
            gt = gt_labels(video) if has_gt else None
            for k, rows in enumerate(sets):
                if not rows:
                    continue
                for t, name in enumerate(video.frame_names):
                    write_label_png(
                        self.pred_dir / f"anno_{k}" / video.video / f"{name}.png", pred_sets[k, t]
                    )
                if gt is not None:
                    self.davis_sets[k].append((video.video, gt, pred_sets[k]))
            return
        for i, exp in enumerate(exps):
            if self.dataset in REFCOCO:
                write_binary_png(self.pred_dir / f"{exp.exp_id}.png", masks[i, 0])
                if has_gt:
                    self.sentence_items.append(
                        (exp.exp_id, video.target_masks(exp)[0], masks[i, 0])
                    )
                continue
            root = (
                self.pred_dir / "Annotations"
                if self.dataset == "ref-youtube-vos"
                else self.pred_dir
            )
            for t, name in enumerate(video.frame_names):
                write_binary_png(root / video.video / exp.exp_id / f"{name}.png", masks[i, t])
            target = video.target_masks(exp) if has_gt else None
            if target is None and self.heldout is not None:
                target = self.heldout.target(video, exp)
            if target is not None:
                self.expression_items.append((video.video, exp.exp_id, target, masks[i]))


def _score(run: _Run, dataset: str) -> protocols.ProtocolResult | None:
    if dataset == "ref-davis17":
        if not any(run.davis_sets):
            return None
        return protocols.ref_davis17([items for items in run.davis_sets if items])
    if dataset in REFCOCO:
        return protocols.refcoco(run.sentence_items) if run.sentence_items else None
    protocol = protocols.ytvos if dataset == "ref-youtube-vos" else protocols.mevis
    return protocol(run.expression_items) if run.expression_items else None


def _rows(result: protocols.ProtocolResult) -> list[dict[str, object]]:
    """Per-sequence rows (Ref-DAVIS17: per set and object, with a ``set`` column)."""
    if result.tables:
        return [{"set": name, **row} for name, rows in result.tables.items() for row in rows]
    return list(result.table)


def _worst_videos(rows: list[dict[str, object]], count: int) -> list[str]:
    key = "sequence" if rows and "sequence" in rows[0] else "video"
    scores: dict[str, list[float]] = {}
    for row in rows:
        if key in row and "J&F" in row:
            scores.setdefault(str(row[key]), []).append(float(row["J&F"]))  # type: ignore[arg-type]
    ranked = sorted(scores, key=lambda v: (float(np.mean(scores[v])), v))
    return ranked[:count]


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def _prediction_masks(pred_dir: Path, dataset: str, video: EvalVideo) -> list[list[np.ndarray]]:
    """Per expression, the frame masks read back from the written PNGs."""
    out = []
    for exp in video.expressions:
        if dataset == "ref-davis17":
            folder = pred_dir / f"anno_{exp.annotation_set}" / video.video
            label = int(exp.obj_ids[0])

            out.append([read_png(folder / f"{n}.png") == label for n in video.frame_names])
        elif dataset in REFCOCO:
            out.append([read_binary_mask(pred_dir / f"{exp.exp_id}.png")])
        else:
            root = pred_dir / "Annotations" if dataset == "ref-youtube-vos" else pred_dir
            out.append(
                [
                    read_binary_mask(root / video.video / exp.exp_id / f"{n}.png")
                    for n in video.frame_names
                ]
            )
    return out


def evaluate_model(
    model: RefSAM,
    dataset: str,
    split: str,
    *,
    shards: Path,
    out: Path,
    heldout: Path | None = None,
    device: str | torch.device = "auto",
    threshold: float = 0.5,
    overlays: int = 3,
    max_videos: int | None = None,
    progress: bool = True,
    texts: Mapping[tuple[str, str], str] | None = None,
) -> EvalResult:
    """Run ``model`` over ``dataset/split`` and write/score everything (module docstring).

    ``texts`` replaces the text of some ``(video, exp_id)`` expressions (controls such as
    expressions swapped between videos); the ground truth stays the original's.
    """
    was_training = model.training
    predictor = OnlinePredictor(model, device=device, threshold=threshold)  # checks threshold
    start = time.perf_counter()
    shard_dir = shard_dir_for(shards, dataset, split)
    out = Path(out)
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    gt_dir = heldout_dir_for(heldout, dataset, split)
    held = HeldoutGT(gt_dir, dataset) if gt_dir is not None else None
    run = _Run(predictor, dataset, pred_dir, held)
    run.texts = dict(texts or {})
    for video in tqdm(
        limited_videos(shard_dir, max_videos),
        desc=f"eval {dataset}/{split}",
        unit="video",
        disable=not progress,
    ):
        run.video(video)
    model.train(was_training)
    seconds = time.perf_counter() - start
    result = _score(run, dataset)
    metrics: dict[str, float | int | str] = dict(result.summary) if result else {}
    metrics.update({"frames": run.frames, "frames_per_s": run.frames / max(seconds, 1e-9)})
    rows = _rows(result) if result else []
    csv_path = out / "per_sequence.csv"
    _write_csv(csv_path, rows)
    submission = None
    if (dataset, split) in SERVER_SPLITS:
        submission = zip_prediction_dir(
            pred_dir,
            out / "submission.zip",
            layout=SERVER_SPLITS[(dataset, split)],  # type: ignore[arg-type]
        )
    overlay_paths: list[Path] = []
    worst = set(_worst_videos(rows, overlays)) if overlays else set()
    if worst:
        for video in limited_videos(shard_dir, max_videos):
            if video.video in worst:
                path = out / "overlays" / f"{video.video}.png"
                masks = _prediction_masks(pred_dir, dataset, video)
                render_sequence_sheet(
                    path, list(video.frames()), masks, [e.text for e in video.expressions]
                )
                overlay_paths.append(path)
    metrics_json = out / "metrics.json"
    record = {
        "dataset": dataset,
        "split": split,
        "mask_threshold": threshold,
        "metrics": metrics,
        "seconds": seconds,
        "per_set": result.table if result and result.tables else None,
    }
    metrics_json.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return EvalResult(
        dataset,
        split,
        metrics,
        csv_path,
        metrics_json,
        pred_dir,
        submission,
        overlay_paths,
        run.frames,
        seconds,
        threshold,
    )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def evaluate(
    checkpoint: Path,
    dataset: str,
    split: str,
    *,
    shards: Path | None,
    out: Path,
    heldout: Path | None = None,
    device: str = "auto",
    logger: RunLogger | None = None,
    max_videos: int | None = None,
    threshold: float | None = None,
) -> EvalResult:
    """Evaluate a training checkpoint (INTERFACES.md); shards/heldout default to the
    checkpoint config's ``data.shards_root`` / ``data.heldout_root``, ``threshold`` (the
    mask probability threshold) to its ``eval.mask_threshold``."""
    model, cfg = model_from_checkpoint(checkpoint, device="cpu")
    shards = Path(shards) if shards is not None else cfg.data.shards_root
    if heldout is None:
        heldout = cfg.data.heldout_root
    if not Path(shards).is_dir():
        raise UserError(f"--shards {shards}: no such directory")
    result = evaluate_model(
        model,
        dataset,
        split,
        shards=shards,
        out=out,
        heldout=heldout,
        device=device,
        threshold=cfg.eval.mask_threshold if threshold is None else threshold,
        overlays=cfg.eval.overlays,
        max_videos=max_videos,
    )
    if logger is not None:
        prefix = f"{dataset}/{split}"
        numeric = {
            f"{prefix}/{k}": float(v)
            for k, v in result.metrics.items()
            if isinstance(v, int | float)
        }
        logger.log_metrics(numeric, step=0)
        logger.log_artifact(result.metrics_json, f"eval/{dataset}-{split}")
        logger.log_artifact(result.per_sequence_csv, f"eval/{dataset}-{split}")
    return result
