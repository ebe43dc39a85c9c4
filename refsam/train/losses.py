"""Mask losses (MODEL.md "Training"): sigmoid focal + dice per frame, void/padding excluded.

Per frame f of clip b, over its valid pixels V (``ClipBatch.valid``):

- focal_f = mean over V of ``-α_t (1 - p_t)^γ log p_t`` (α = 0.25, γ = 2, RetinaNet's form);
- dice_f = 1 - (2 Σ_V p·y + 1) / (Σ_V p + Σ_V y + 1) (the +1 makes an empty target with
  an empty prediction cost nothing);
- loss_f = w_focal · focal_f + w_dice · dice_f (1:1 by default).

The clip loss is the mean of loss_f over every (b, f) frame that has at least one valid
pixel, i.e. averaged over frames and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0


@dataclass
class MaskLoss:
    """The loss of a batch: ``total`` (scalar with grad) and its detached parts."""

    total: torch.Tensor
    focal: float
    dice: float
    frames: int


def sigmoid_focal_map(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Per-pixel sigmoid focal loss, same shape as ``logits`` (no reduction).

    ``alpha < 0`` disables the class balancing (as in torchvision's ``sigmoid_focal_loss``).
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def frame_losses(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Focal and dice of every frame over its valid pixels.

    Args:
        logits: B×T×H×W mask logits (any float dtype; computed in float32).
        targets: B×T×H×W 0/1 targets.
        valid: B×T×H×W bool, False on padding and void.

    Returns:
        (focal B×T, dice B×T, has_valid B×T bool).
    """
    if logits.shape != targets.shape or logits.shape != valid.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and valid "
            f"{tuple(valid.shape)} must have the same B×T×H×W shape"
        )
    logits = logits.float()
    weight = valid.to(logits.dtype)
    targets = targets.to(logits.dtype) * weight
    count = weight.sum(dim=(-2, -1))
    focal = (sigmoid_focal_map(logits, targets) * weight).sum(dim=(-2, -1)) / count.clamp(min=1)
    prob = logits.sigmoid() * weight
    inter = (prob * targets).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + DICE_SMOOTH) / (
        prob.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1)) + DICE_SMOOTH
    )
    return focal, dice, count > 0


def mask_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    *,
    focal_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> MaskLoss:
    """Focal + dice averaged over frames and batch (frames with no valid pixel left out).

    Shapes as :func:`frame_losses`. A batch with no valid pixel at all gives a zero loss
    that still depends on ``logits`` (so every rank runs the same backward under DDP).
    """
    focal, dice, has_valid = frame_losses(logits, targets, valid)
    n = int(has_valid.sum())
    if n == 0:
        zero = logits.float().sum() * 0.0
        return MaskLoss(zero, 0.0, 0.0, 0)
    focal_mean = focal[has_valid].mean()
    dice_mean = dice[has_valid].mean()
    total = focal_weight * focal_mean + dice_weight * dice_mean
    return MaskLoss(total, float(focal_mean.detach()), float(dice_mean.detach()), n)
