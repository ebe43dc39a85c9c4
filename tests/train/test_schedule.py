"""Per-module learning rates, AdamW groups, warm-up + cosine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from refsam.config import StageConfig, TrainConfig
from refsam.train.schedule import WarmupCosine, build_optimizer, group_lr


def _groups() -> dict[str, list[nn.Parameter]]:
    return {
        "cross_modal_mlp": [nn.Parameter(torch.zeros(4, 4)), nn.Parameter(torch.zeros(4))],
        "mask_decoder": [nn.Parameter(torch.zeros(3, 3))],
        "image_encoder": [nn.Parameter(torch.zeros(2, 2))],
        "tracking": [nn.Parameter(torch.zeros(1, 5))],
    }


def test_group_learning_rates_follow_the_paper_split() -> None:
    train = TrainConfig(lr=1e-4, lr_mask_decoder=1e-6, lr_sam=1e-5)
    stage = StageConfig(name="s", datasets=[], steps=1, lr=3e-4)
    assert group_lr("adapters", train) == 1e-4
    assert group_lr("dense", train, stage) == 3e-4  # a stage lr replaces train.lr
    assert group_lr("mask_decoder", train, stage) == 1e-6
    assert group_lr("image_encoder", train) == 1e-5
    assert group_lr("prompt_encoder", train) == 1e-5


def test_optimizer_groups_and_weight_decay() -> None:
    train = TrainConfig(lr=1e-3, lr_mask_decoder=1e-6, lr_sam=1e-5, weight_decay=0.05)
    optimizer = build_optimizer(_groups(), train)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == {
        "cross_modal_mlp", "cross_modal_mlp/no_decay", "mask_decoder", "image_encoder", "tracking",
    }  # fmt: skip
    assert by_name["cross_modal_mlp"]["weight_decay"] == 0.05
    assert by_name["cross_modal_mlp/no_decay"]["weight_decay"] == 0.0
    assert by_name["mask_decoder"]["lr"] == 1e-6
    assert by_name["image_encoder"]["lr"] == 1e-5
    assert isinstance(optimizer, torch.optim.AdamW)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer({}, train)


def test_warmup_then_cosine_to_floor() -> None:
    optimizer = build_optimizer(_groups(), TrainConfig(lr=1e-3, lr_mask_decoder=1e-5))
    schedule = WarmupCosine(optimizer, warmup=4, total=14, min_ratio=0.1)
    seen = []
    for _ in range(15):
        seen.append(schedule.lrs())
        schedule.step()
    mlp = [s["cross_modal_mlp"] for s in seen]
    assert mlp[:4] == pytest.approx([1e-3 * k / 5 for k in (1, 2, 3, 4)])
    assert mlp[4] == pytest.approx(1e-3)  # peak right after warm-up
    assert mlp[9] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert mlp[14] == pytest.approx(1e-4)  # the floor at the end
    assert all(a >= b for a, b in zip(mlp[4:], mlp[5:], strict=False))
    decoder = [s["mask_decoder"] for s in seen]
    assert decoder[4] == pytest.approx(1e-5)  # every group follows the same shape


def test_schedule_state_round_trip() -> None:
    optimizer = build_optimizer(_groups(), TrainConfig(lr=1e-3))
    schedule = WarmupCosine(optimizer, warmup=2, total=10)
    for _ in range(6):
        schedule.step()
    state = schedule.state_dict()
    assert state == {"step": 6}
    other_opt = build_optimizer(_groups(), TrainConfig(lr=1e-3))
    other = WarmupCosine(other_opt, warmup=2, total=10)
    other.load_state_dict(state)
    assert other.lrs() == pytest.approx(schedule.lrs())


def test_a_warmup_longer_than_the_stage_is_reported() -> None:
    optimizer = build_optimizer(_groups(), TrainConfig(lr=1e-3))
    assert WarmupCosine(optimizer, warmup=9, total=10).problem() is None
    problem = WarmupCosine(optimizer, warmup=300, total=100).problem()
    assert problem is not None and "warmup_steps (300) >= the stage's steps (100)" in problem
    assert "0.33 × its peak" in problem  # step 99 of a 300-step warm-up: 100 / 301
