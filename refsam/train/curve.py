"""The validation curve: a small J&F measurement every ``eval.curve_every`` steps.

It scores the first ``eval.curve_videos`` videos of every ``eval.sets`` split and logs
``val/<dataset>/<split>/{J,F,J&F}`` at the training step, which is what the run's
J&F-vs-step plot draws. It only watches: it picks no checkpoint (``train.eval_every``'s
full evaluation does), and it leaves the training exactly as it was — the RNG states
(torch, CUDA, numpy, python) and the model's train/eval mode are restored, so a run with
the curve ends with the same weights as one without.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from refsam.config import RefSAMConfig
from refsam.modeling import RefSAM
from refsam.runlog import RunLogger
from refsam.train.checkpoint import capture_rng_state, restore_rng_state

CURVE_PREFIX = "val"
CURVE_METRICS = ("J", "F", "J&F")


def curve_due(cfg: RefSAMConfig, step: int) -> bool:
    """Whether the validation curve is measured after training step ``step``."""
    return bool(cfg.eval.curve_every and cfg.eval.sets and step % cfg.eval.curve_every == 0)


def measure_curve(
    model: RefSAM, cfg: RefSAMConfig, device: torch.device, step: int, logger: RunLogger
) -> dict[str, float]:
    """Score the curve's videos (module docstring), log them at ``step``, return them."""
    from refsam.eval.evaluator import evaluate_model

    rng, was_training = capture_rng_state(), model.training
    metrics: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="refsam-curve-") as tmp:
            for split in cfg.eval.sets:
                result = evaluate_model(
                    model,
                    split.dataset,
                    split.split,
                    shards=cfg.data.shards_root,
                    out=Path(tmp) / f"{split.dataset}-{split.split}",
                    heldout=cfg.data.heldout_root,
                    device=device,
                    threshold=cfg.eval.mask_threshold,
                    overlays=0,
                    max_videos=cfg.eval.curve_videos,
                    progress=False,
                )
                for key in CURVE_METRICS:
                    value = result.metrics.get(key)
                    if isinstance(value, int | float):
                        metrics[f"{CURVE_PREFIX}/{split.tag}/{key}"] = float(value)
    finally:
        model.train(was_training)
        restore_rng_state(rng)
    logger.log_metrics(metrics, step)
    return metrics
