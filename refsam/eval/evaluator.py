"""Evaluate a checkpoint (or an in-memory model) on one dataset split.

Online inference with :class:`~refsam.eval.predictor.OnlinePredictor` (one encoder pass
per frame for all of a video's expressions). Everything that depends on the dataset comes
from its evaluation family (:mod:`refsam.eval.families`): the masks are written in the
family's layout under ``out/predictions/`` and scored with its protocol against the
shard's GT or the held-out GT it reads; server-scored splits get ``submission.zip`` in
the family's zip format.

Also written: ``metrics.json``, ``per_sequence.csv`` and contact-sheet overlays of the
worst sequences (``overlays/``). With held-out expression subsets for the split
(:mod:`refsam.eval.subsets`) the rows get a ``subset`` column and the metrics
``J&F/<subset>``, ``J/<subset>``, ``F/<subset>`` and ``n/<subset>``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refsam.data.loader import iter_eval_videos
from refsam.data.types import EvalVideo
from refsam.errors import UserError
from refsam.eval import protocols
from refsam.eval.families import FamilyRun, family_for
from refsam.eval.ground_truth import heldout_dir_for, shard_dir_for
from refsam.eval.predictor import FramePrediction, OnlinePredictor
from refsam.eval.sharded import Shard, gather_on_main
from refsam.eval.submission import zip_prediction_dir
from refsam.eval.subsets import ExpressionSubsets
from refsam.eval.visualize import render_sequence_sheet
from refsam.fsio import write_csv
from refsam.modeling.checkpoint import model_from_checkpoint
from refsam.modeling.refsam import RefSAM
from refsam.runlog import RunLogger
from refsam.storage import as_path

log = logging.getLogger(__name__)


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
    """Feeds each video's frames from the predictor to the family's run, counting frames."""

    def __init__(
        self,
        predictor: OnlinePredictor,
        family_run: FamilyRun,
        texts: Mapping[tuple[str, str], str],
    ) -> None:
        self.predictor = predictor
        self.family_run = family_run
        self.texts = texts
        self.frames = 0

    def video(self, video: EvalVideo) -> None:
        if not video.expressions:
            return
        texts = [self.texts.get((video.video, e.exp_id), e.text) for e in video.expressions]
        self.family_run.add_video(video, self._counted(self.predictor.track(video.frames(), texts)))

    def _counted(self, frames: Iterator[FramePrediction]) -> Iterator[FramePrediction]:
        for frame in frames:
            self.frames += 1
            yield frame


def limited_videos(shard_dir: Path, max_videos: int | None) -> Iterator[EvalVideo]:
    """The split's videos in shard order, the first ``max_videos`` only when given."""
    for index, video in enumerate(iter_eval_videos(shard_dir)):
        if max_videos is not None and index >= max_videos:
            return
        yield video


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
    shard: Shard = Shard(),
) -> EvalResult | None:
    """Run ``model`` over ``dataset/split`` and write/score everything (module docstring).

    ``texts`` replaces the text of some ``(video, exp_id)`` expressions (controls such as
    expressions swapped between videos); the ground truth stays the original's. ``shard``
    (a rank of a torchrun job): this process predicts its share of the videos, rank 0
    scores them all (:mod:`refsam.eval.sharded`) and returns the result; other ranks
    return None.
    """
    family = family_for(dataset)
    was_training = model.training
    predictor = OnlinePredictor(model, device=device, threshold=threshold)  # checks threshold
    start = time.perf_counter()
    shard_dir = shard_dir_for(shards, dataset, split)
    out = Path(out)
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    held = family.heldout_gt(heldout_dir_for(heldout, dataset, split))
    subsets = ExpressionSubsets.find(heldout, dataset, split)  # a bad file fails before inference
    family_run = family.start(pred_dir, threshold=predictor.threshold, heldout=held)
    run = _Run(predictor, family_run, dict(texts or {}))
    kept: list[tuple[int, object, int]] = []
    videos = limited_videos(shard_dir, max_videos)
    for index, video in enumerate(
        tqdm(videos, desc=f"eval {dataset}/{split}", unit="video", disable=not progress)
    ):
        if not shard.owns(index):
            continue
        before = run.frames
        run.video(video)
        if shard.split:
            kept.append((index, family_run.take(), run.frames - before))
    model.train(was_training)
    frames = run.frames
    if shard.split:
        gathered = gather_on_main(shard, kept)
        if not shard.is_main:
            return None
        for _, items, _ in gathered:
            family_run.put(items)
        frames = sum(count for _, _, count in gathered)
    seconds = time.perf_counter() - start
    result = family_run.score()
    metrics: dict[str, float | int | str] = dict(result.summary) if result else {}
    rows = _rows(result) if result else []
    if subsets is not None and rows:
        rows = subsets.tag(rows)
        metrics.update(subsets.metrics(rows))
    metrics.update({"frames": frames, "frames_per_s": frames / max(seconds, 1e-9)})
    csv_path = out / "per_sequence.csv"
    write_csv(csv_path, rows)
    submission = None
    zip_format = family.submission_format(split)
    if zip_format is not None:
        submission = zip_prediction_dir(pred_dir, out / "submission.zip", layout=zip_format)
    overlay_paths: list[Path] = []
    worst = set(_worst_videos(rows, overlays)) if overlays else set()
    if worst:
        for video in limited_videos(shard_dir, max_videos):
            if video.video in worst:
                path = out / "overlays" / f"{video.video}.png"
                masks = family.read_predictions(pred_dir, video)
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
        frames,
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
    family_for(dataset)  # an unknown dataset fails before the model is built
    model, cfg = model_from_checkpoint(checkpoint, device="cpu")
    shards = as_path(shards) if shards is not None else cfg.data.shards_root
    if heldout is None:
        heldout = cfg.data.heldout_root
    if not shards.is_dir():
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
