"""Focal + dice loss against hand-computed values; void/padding excluded."""

from __future__ import annotations

import math

import pytest
import torch

from refsam.train.losses import frame_losses, mask_loss, sigmoid_focal_map

LN2 = math.log(2)
FOCAL_POS_AT_0 = 0.25 * 0.5**2 * LN2  # y=1, p=0.5: α (1-p)^γ (-log p) = 0.0433217
FOCAL_NEG_AT_0 = 0.75 * 0.5**2 * LN2  # y=0, p=0.5: (1-α) p^γ (-log(1-p)) = 0.1299651


def _clip(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def test_focal_map_matches_formula() -> None:
    logits = torch.tensor([0.0, 0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    p2 = 1 / (1 + math.exp(-2.0))
    pm1 = 1 / (1 + math.exp(1.0))
    expected = [
        FOCAL_POS_AT_0,
        FOCAL_NEG_AT_0,
        0.25 * (1 - p2) ** 2 * -math.log(p2),
        0.75 * pm1**2 * -math.log(1 - pm1),
    ]
    assert sigmoid_focal_map(logits, targets).tolist() == pytest.approx(expected, rel=1e-5)


def test_all_valid_hand_computed() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    targets = _clip([[1, 0], [0, 1]])
    valid = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    loss = mask_loss(logits, targets, valid)
    focal = (2 * FOCAL_POS_AT_0 + 2 * FOCAL_NEG_AT_0) / 4
    dice = 1 - (2 * 1.0 + 1) / (2.0 + 2.0 + 1)  # Σp·y = 1, Σp = 2, Σy = 2 → 0.4
    assert loss.focal == pytest.approx(focal, rel=1e-5)
    assert loss.dice == pytest.approx(dice, rel=1e-5)
    assert float(loss.total) == pytest.approx(focal + dice, rel=1e-5)


def test_void_pixels_are_excluded() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    targets = _clip([[1, 0], [0, 1]])
    valid = _clip([[1, 1], [1, 0]]).bool()  # the positive bottom-right pixel is void
    loss = mask_loss(logits, targets, valid)
    focal = (FOCAL_POS_AT_0 + 2 * FOCAL_NEG_AT_0) / 3  # 0.1010840
    dice = 1 - (2 * 0.5 + 1) / (1.5 + 1.0 + 1)  # 0.4285714
    assert loss.focal == pytest.approx(focal, rel=1e-5)
    assert loss.dice == pytest.approx(dice, rel=1e-5)
    assert float(loss.total) == pytest.approx(0.5296554, rel=1e-5)


def test_void_logits_get_no_gradient_and_do_not_change_the_loss() -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    targets = (torch.rand(2, 3, 8, 8) > 0.5).float()
    valid = torch.rand(2, 3, 8, 8) > 0.3
    mask_loss(logits, targets, valid).total.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[~valid] == 0)
    assert torch.any(logits.grad[valid] != 0)
    changed = logits.detach().clone()
    changed[~valid] = 50.0  # anything under void
    a = mask_loss(logits.detach(), targets, valid).total
    b = mask_loss(changed, targets, valid).total
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_mean_over_frames_and_batch_skips_fully_void_frames() -> None:
    logits = torch.randn(2, 2, 4, 4)
    targets = (torch.rand(2, 2, 4, 4) > 0.5).float()
    valid = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    valid[1, 1] = False  # padding frame
    focal, dice, has = frame_losses(logits, targets, valid)
    assert has.tolist() == [[True, True], [True, False]]
    expected = float((focal + dice)[has].mean())
    assert float(mask_loss(logits, targets, valid).total) == pytest.approx(expected, rel=1e-6)
    # each frame is computed on its own: frame (0, 0) alone gives its own value
    alone = mask_loss(logits[:1, :1], targets[:1, :1], valid[:1, :1]).total
    assert float(alone) == pytest.approx(float(focal[0, 0] + dice[0, 0]), rel=1e-6)


def test_weights_and_empty_target() -> None:
    logits = torch.full((1, 1, 2, 2), -20.0)
    targets = torch.zeros(1, 1, 2, 2)
    valid = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    loss = mask_loss(logits, targets, valid)
    assert loss.dice == pytest.approx(0.0, abs=1e-6)  # empty target, empty prediction
    assert loss.focal == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros(1, 1, 2, 2)
    targets = _clip([[1, 0], [0, 1]])
    weighted = mask_loss(logits, targets, valid, focal_weight=20.0, dice_weight=0.5)
    assert float(weighted.total) == pytest.approx(
        20 * weighted.focal + 0.5 * weighted.dice, rel=1e-6
    )


def test_all_void_batch_is_zero_with_a_graph() -> None:
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = mask_loss(logits, torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.bool))
    assert float(loss.total.detach()) == 0.0 and loss.frames == 0
    loss.total.backward()
    assert torch.all(logits.grad == 0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same B×T×H×W"):
        mask_loss(
            torch.zeros(1, 1, 4, 4),
            torch.zeros(1, 1, 4, 5),
            torch.ones(1, 1, 4, 4, dtype=torch.bool),
        )
