"""Optimiser and learning-rate schedule (MODEL.md "Training").

AdamW over the model's trainable parameter groups, each group with its own peak learning
rate: ``lr`` (or the stage's ``lr``) for adapters / cross-modal MLP / dense path /
tracking, ``lr_mask_decoder`` for SAM's mask decoder, ``lr_sam`` for the image and prompt
encoders when they are trained. The schedule is linear warm-up then cosine decay to
``min_lr_ratio`` × peak, a pure function of the step so its state is one integer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from refsam.config import StageConfig, TrainConfig

MASK_DECODER_GROUPS = ("mask_decoder",)
SAM_GROUPS = ("image_encoder", "prompt_encoder")


def group_lr(name: str, train: TrainConfig, stage: StageConfig | None = None) -> float:
    """Peak learning rate of parameter group ``name``."""
    if name in MASK_DECODER_GROUPS:
        return train.lr_mask_decoder
    if name in SAM_GROUPS:
        return train.lr_sam
    if stage is not None and stage.lr is not None:
        return stage.lr
    return train.lr


def build_optimizer(
    groups: dict[str, list[nn.Parameter]], train: TrainConfig, stage: StageConfig | None = None
) -> torch.optim.AdamW:
    """AdamW with one param group per named group (``group["name"]`` kept for logging).

    Norms, biases and embeddings/tokens (tensors with < 2 dims) get no weight decay.
    """
    param_groups: list[dict[str, Any]] = []
    for name, params in groups.items():
        lr = group_lr(name, train, stage)
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        if decay:
            param_groups.append(
                {"params": decay, "lr": lr, "weight_decay": train.weight_decay, "name": name}
            )
        if no_decay:
            param_groups.append(
                {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"}
            )
    if not param_groups:
        raise ValueError("no trainable parameters: check model.trainable")
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.999))


class WarmupCosine:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``.

    Multiplies each param group's peak ``initial_lr``; :meth:`step` advances by one
    optimiser step. ``state_dict()`` is ``{"step": int}`` (plain, weights-only loadable).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, warmup: int, total: int, min_ratio: float = 0.0
    ) -> None:
        self.optimizer = optimizer
        self.warmup = max(0, warmup)
        self.total = max(1, total)
        self.min_ratio = min_ratio
        self.last_step = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def factor(self, step: int) -> float:
        """The multiplier at optimiser step ``step`` (0-based: the lr used by that step)."""
        if self.warmup and step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def problem(self) -> str | None:
        """Why this schedule never reaches its peak learning rate (None when it does)."""
        if self.warmup >= self.total:
            return (
                f"warmup_steps ({self.warmup}) >= the stage's steps ({self.total}): the "
                f"learning rate only climbs to {self.factor(self.total - 1):.2f} × its peak "
                "and never decays; lower train.warmup_steps"
            )
        return None

    def _apply(self) -> None:
        factor = self.factor(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def lrs(self) -> dict[str, float]:
        """Current learning rate per named group (decay/no-decay halves share one)."""
        out: dict[str, float] = {}
        for group in self.optimizer.param_groups:
            out.setdefault(str(group.get("name", "group")).split("/")[0], group["lr"])
        return out

    def state_dict(self) -> dict[str, int]:
        return {"step": self.last_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.last_step = int(state["step"])
        self._apply()
