"""Exact resume: a run interrupted at a checkpoint and resumed ends with the same weights."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from refsam.config import RefSAMConfig
from refsam.data.types import ClipBatch
from refsam.modeling.checkpoint import load_checkpoint
from refsam.train.checkpoint import list_step_checkpoints
from refsam.train.loop import BatchStream, LoaderPosition
from refsam.train.runner import train
from refsam.train.state import shard_dir

RUN = [
    "eval.sets=[]",
    "train.checkpoint_every=1",
    "train.keep_last=20",
    "train.warmup_steps=1",
    "train.grad_accum=2",
    "train.stages=[{name: pre, datasets: [{dataset: refcoco, split: train}], steps: 3, batch_size: 2, frames_per_clip: 1},"
    " {name: fine, datasets: [{dataset: ref-youtube-vos, split: train}], steps: 4, batch_size: 2, frames_per_clip: 2}]",
]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_interrupted_runs_resume_to_identical_weights(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    full_cfg = make_config(*RUN, "train.run_name=full")
    full = train(full_cfg)
    assert full.steps == 7
    checkpoints = list_step_checkpoints(full.run_dir / "checkpoints")
    assert [p.name for p in checkpoints] == [f"step-{s:08d}.pt" for s in range(1, 8)]
    final = _weights(full.last_checkpoint)
    assert not _same(final, _weights(checkpoints[0]))  # training changed the weights

    # interrupted in the middle of stage 1 (step 2) and in the middle of stage 2 (step 5):
    # the run directory holds what the killed run had written up to then
    for step in (2, 5):
        cfg = make_config(*RUN, f"train.run_name=resumed-{step}")
        ckpt_dir = tmp_path / "outputs" / f"resumed-{step}" / "checkpoints"
        ckpt_dir.mkdir(parents=True)
        shutil.copy(checkpoints[step - 1], ckpt_dir / checkpoints[step - 1].name)
        resumed = train(cfg, resume="auto")
        assert resumed.steps == 7
        assert _same(final, _weights(resumed.last_checkpoint)), f"resume from step {step} diverged"
        payload = load_checkpoint(resumed.last_checkpoint)
        assert payload["progress"]["stage_name"] == "fine"
        assert payload["progress"]["stage_step"] == 4


@pytest.mark.slow
def test_resume_auto_without_checkpoints_starts_fresh_and_a_finished_run_stays_put(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    cfg = make_config(*RUN[:-1], "train.run_name=fresh",
                      "train.stages=[{name: only, datasets: [{dataset: refcoco, split: train}], steps: 2, batch_size: 2, frames_per_clip: 1}]")  # fmt: skip
    first = train(cfg, resume="auto")
    assert first.steps == 2
    again = train(cfg, resume="auto")  # already finished: nothing left to train
    assert again.steps == 2 and again.stages == []
    assert _same(_weights(first.last_checkpoint), _weights(again.last_checkpoint))


def test_batch_stream_continues_across_epochs_from_a_position(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    cfg = make_config()
    dirs = [shard_dir(cfg, "ref-youtube-vos", "train")]

    def stream(position: LoaderPosition | None = None) -> BatchStream:
        s = BatchStream(dirs, img_size=64, frames_per_clip=1, batch_size=4, seed=3)
        if position is not None:
            s.position = position
        return s

    def key(batch: ClipBatch) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(m["video"], m["exp_id"], tuple(m["frame_names"])) for m in batch.meta]

    first = stream()
    seen = [key(first.next()) for _ in range(7)]  # 9 expressions / 4 → 3 batches per epoch
    assert first.position.epoch == 2 and first.position.batches == 1
    assert seen[0] != seen[3]  # another epoch, another order
    later = stream(LoaderPosition(1, 1))
    assert [key(later.next()) for _ in range(3)] == seen[4:7]
