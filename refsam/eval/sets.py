"""Score the evaluation sets of a config (``eval.sets``) with an in-memory model: what
training does periodically and at its end."""

from __future__ import annotations

from pathlib import Path

import torch

from refsam.config import RefSAMConfig
from refsam.eval.evaluator import evaluate_model
from refsam.eval.sharded import Shard
from refsam.modeling.refsam import RefSAM


def evaluate_config_sets(
    model: RefSAM,
    cfg: RefSAMConfig,
    out: Path,
    device: torch.device,
    *,
    overlays: int,
    shard: Shard = Shard(),
) -> dict[str, float]:
    """Score ``cfg.eval.sets``; keys ``<dataset>/<split>/<metric>`` (numbers only). With a
    ``shard`` of a torchrun job every rank predicts its share of the videos and rank 0 gets
    the metrics (the other ranks get {})."""
    metrics: dict[str, float] = {}
    for split in cfg.eval.sets:
        result = evaluate_model(
            model,
            split.dataset,
            split.split,
            shards=cfg.data.shards_root,
            out=out / f"{split.dataset}-{split.split}",
            heldout=cfg.data.heldout_root,
            device=device,
            threshold=cfg.eval.mask_threshold,
            overlays=overlays,
            progress=False,
            shard=shard,
        )
        if result is None:  # a rank other than 0: its share is scored there
            continue
        for key, value in result.metrics.items():
            if isinstance(value, int | float):
                metrics[f"{split.tag}/{key}"] = float(value)
    return metrics
