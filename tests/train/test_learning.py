"""Learning is real: `configs/demo-tiny-cpu.yaml` on the (small) demo data, trained once.

Thresholds from the issue: after training, J&F ≥ 0.6 on the held-out demo Ref-DAVIS17
(four-set mean) and Ref-YouTube-VOS valid (held-out GT); the untrained model ≤ 0.2; the
trained model with each expression replaced by one from a different video < 0.35 on
Ref-YouTube-VOS valid (language must matter). One training shared by the tests.

Status: issue 7's recipe (no temporal path) measured 0.54-0.62 / 0.51-0.57 over seeds 0-3,
so the 0.6 check was an xfail; with issue 20's `temporal: flow` (pixel motion grounded in the
words, consecutive-frame clips) seeds 0-3 measured above 0.6 on both sets and it is a plain
assertion. A fourth control shows that the model reads motion: swapping the direction words
(left/right, up/down) of the expressions only motion resolves drops their J&F far below the
trained score (seed 0: 0.68 -> 0.20 on Ref-YouTube-VOS valid).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from refsam.config import load_config
from refsam.data.demo import generate_demo
from refsam.data.loader import iter_eval_videos
from refsam.data.shards import ingest
from refsam.data.sources import raw_dir_name
from refsam.eval.evaluator import evaluate_model
from refsam.eval.subsets import ExpressionSubsets
from refsam.train.runner import TrainResult, train
from refsam.train.state import build_model, seed_everything

from .conftest import CONFIGS

pytestmark = pytest.mark.slow
NEEDED = [
    ("refcoco", "train"), ("refcoco+", "train"), ("refcocog", "train"),
    ("ref-youtube-vos", "train"), ("ref-youtube-vos", "valid"), ("ref-davis17", "valid"),
    ("mevis", "train"), ("mevis", "valid_u"), ("mevis", "valid"),
]  # fmt: skip
TRAINED_TARGET, TRAINED_FLOOR, UNTRAINED_MAX, SWAPPED_MAX = 0.6, 0.4, 0.2, 0.35


@pytest.fixture(scope="session")
def demo_training(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    root = tmp_path_factory.mktemp("learning")
    generate_demo(root / "demo", seed=0, scale="small")
    for name, split in NEEDED:
        raw = root / "demo" / "raw" / raw_dir_name(name)
        ingest(name, split, raw, root / "demo" / "shards", shard_size=32, progress=False)
    cfg = load_config(CONFIGS / "demo-tiny-cpu.yaml", [
        f"data.shards_root={root / 'demo' / 'shards'}", f"data.heldout_root={root / 'demo' / 'heldout'}",
        f"train.output_dir={root / 'outputs'}", "train.device=cpu", "tracking.enabled=false",
        "eval.overlays=0",
    ])  # fmt: skip
    return train(cfg), root


def _metrics(
    model: torch.nn.Module, root: Path, dataset: str, out: Path, **kwargs: object
) -> dict[str, float]:
    """Metrics (J&F and its subsets) at the recipe's own mask threshold, as the trained
    scores are measured."""
    threshold = load_config(CONFIGS / "demo-tiny-cpu.yaml").eval.mask_threshold
    result = evaluate_model(
        model, dataset, "valid", shards=root / "demo" / "shards", out=out,
        heldout=root / "demo" / "heldout", device="cpu", threshold=threshold, overlays=0,
        progress=False, **kwargs,
    )  # fmt: skip
    return {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}


def _jf(model: torch.nn.Module, root: Path, dataset: str, out: Path, **kwargs: object) -> float:
    return _metrics(model, root, dataset, out, **kwargs)["J&F"]


def test_trained_model_segments_the_referred_objects(
    demo_training: tuple[TrainResult, Path],
) -> None:
    result, _ = demo_training
    davis = result.metrics["ref-davis17/valid/J&F"]
    ytvos = result.metrics["ref-youtube-vos/valid/J&F"]
    print(f"trained: Ref-DAVIS17 J&F {davis:.3f}, Ref-YouTube-VOS valid J&F {ytvos:.3f}")
    # regression floor (issue 7 measured ~0.55 before the temporal path): below 0.4 fails
    assert davis > TRAINED_FLOOR
    assert ytvos > TRAINED_FLOOR
    assert davis >= TRAINED_TARGET
    assert ytvos >= TRAINED_TARGET


def test_untrained_model_scores_low(
    demo_training: tuple[TrainResult, Path], tmp_path: Path
) -> None:
    result, root = demo_training
    cfg = load_config(CONFIGS / "demo-tiny-cpu.yaml", ["tracking.enabled=false"])
    seed_everything(cfg.train.seed)
    untrained = build_model(cfg)
    for dataset in ("ref-davis17", "ref-youtube-vos"):
        score = _jf(untrained, root, dataset, tmp_path / dataset)
        print(f"untrained: {dataset} J&F {score:.3f}")
        assert score <= UNTRAINED_MAX


def test_text_from_another_video_breaks_the_prediction(
    demo_training: tuple[TrainResult, Path], tmp_path: Path
) -> None:
    result, root = demo_training
    videos = list(iter_eval_videos(root / "demo" / "shards" / "ref-youtube-vos" / "valid"))
    swapped = {}
    for index, video in enumerate(videos):
        donor = videos[(index + 1) % len(videos)]
        for j, exp in enumerate(video.expressions):
            swapped[(video.video, exp.exp_id)] = donor.expressions[j % len(donor.expressions)].text
    assert all(swapped[(v.video, e.exp_id)] != e.text for v in videos for e in v.expressions[:1])
    score = _jf(result.model, root, "ref-youtube-vos", tmp_path, texts=swapped)
    trained = result.metrics["ref-youtube-vos/valid/J&F"]
    print(f"swapped-text control: Ref-YouTube-VOS valid J&F {score:.3f} (trained {trained:.3f})")
    assert score < SWAPPED_MAX
    assert score < trained - 0.05  # the text the model is given changes what it segments


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _opposite_direction(text: str) -> str:
    return re.sub(r"\b(left|right|up|down)\b", lambda m: OPPOSITE[m.group(1)], text)


def test_motion_words_steer_the_prediction(
    demo_training: tuple[TrainResult, Path], tmp_path: Path
) -> None:
    """The expressions only motion resolves ("the circle moving left" beside one moving
    right): with the opposite direction in the text the model must segment the other object."""
    result, root = demo_training
    subsets = ExpressionSubsets.find(root / "demo" / "heldout", "ref-youtube-vos", "valid")
    assert subsets is not None
    texts = {
        (video.video, exp.exp_id): _opposite_direction(exp.text)
        for video in iter_eval_videos(root / "demo" / "shards" / "ref-youtube-vos" / "valid")
        for exp in video.expressions
        if subsets.labels.get((video.video, exp.exp_id)) == "motion"
        and _opposite_direction(exp.text) != exp.text
    }
    assert len(texts) >= 10  # the demo's motion-only expressions with a direction
    trained = _metrics(result.model, root, "ref-youtube-vos", tmp_path / "true")["J&F/motion"]
    flipped = _metrics(result.model, root, "ref-youtube-vos", tmp_path / "flip", texts=texts)
    print(f"motion-only J&F {trained:.3f}, directions reversed {flipped['J&F/motion']:.3f}")
    assert trained > 0.5
    assert flipped["J&F/motion"] < trained - 0.2
