"""The validation curve (eval.curve_every) watches the training without changing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from refsam.config import RefSAMConfig
from refsam.modeling.checkpoint import load_checkpoint
from refsam.train.curve import measure_curve
from refsam.train.runner import train
from refsam.train.state import build_model


class MemoryLogger:
    """A RunLogger that keeps what it is given."""

    run_id: str | None = None

    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_run_with_the_curve_ends_with_the_same_weights(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    logs = {}
    weights = {}
    for name, curve in (("plain", "0"), ("curve", "2")):
        cfg = make_config(
            f"train.run_name={name}", f"eval.curve_every={curve}", "eval.curve_videos=1"
        )
        logs[name] = MemoryLogger()
        result = train(cfg, logger=logs[name], final_eval=False)
        weights[name] = load_checkpoint(result.last_checkpoint)["model"]
    assert _same(weights["plain"], weights["curve"])
    points = [(s, m) for s, m in logs["curve"].metrics if any(k.startswith("val/") for k in m)]
    assert [s for s, _ in points] == [2, 4]
    assert set(points[0][1]) == {
        f"val/{tag}/{k}"
        for tag in ("ref-davis17/valid", "ref-youtube-vos/valid")
        for k in ("J", "F", "J&F")
    }
    assert all(0.0 <= v <= 1.0 for _, m in points for v in m.values())
    assert not [m for _, m in logs["plain"].metrics if any(k.startswith("val/") for k in m)]


@pytest.mark.slow
def test_a_curve_point_restores_rng_and_model_mode(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    cfg = make_config("eval.curve_videos=1", "eval.sets=[{dataset: ref-davis17, split: valid}]")
    model = build_model(cfg)
    logger = MemoryLogger()
    for training in (True, False):
        model.train(training)
        torch.manual_seed(7)
        expected = torch.rand(4)
        torch.manual_seed(7)
        metrics = measure_curve(model, cfg, torch.device("cpu"), 5, logger)
        assert torch.equal(torch.rand(4), expected)  # the training's RNG stream is untouched
        assert model.training is training
        assert set(metrics) == {
            "val/ref-davis17/valid/J",
            "val/ref-davis17/valid/F",
            "val/ref-davis17/valid/J&F",
        }
    assert [s for s, _ in logger.metrics] == [5, 5]
