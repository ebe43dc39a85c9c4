"""The temporal path (model.temporal: window): online, bounded, identity when untrained,
``none`` unchanged, and the training (forward_clip) and inference (predictor) paths agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from refsam.config import ModelConfig
from refsam.errors import ConfigError
from refsam.eval.predictor import OnlinePredictor
from refsam.modeling.temporal import FrameWindow, MotionWindow

TEXTS = ["the red circle moving left", "the square that is not moving"]


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised last conv weights, so the window changes the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def _window_model(build_tiny, window: int = 2, tracking: bool = True):
    model = build_tiny(temporal="window", temporal_window=window, tracking=tracking).eval()
    _randomise(model.temporal)
    return model


def test_none_builds_todays_model_and_window_adds_only_its_module(build_tiny, random_frames):
    plain = build_tiny(seed=3).eval()
    none = build_tiny(seed=3, temporal="none").eval()
    window = build_tiny(seed=3, temporal="window").eval()
    assert none.temporal is None and "temporal" not in none.param_groups()
    assert none.state_dict().keys() == plain.state_dict().keys()
    extra = set(window.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("temporal.") for k in extra)
    for key, value in plain.state_dict().items():  # the window is built last: same RNG draws
        assert torch.equal(value, none.state_dict()[key])
        assert torch.equal(value, window.state_dict()[key])
    frames = random_frames(2, 3, 3, 128, 128)
    with torch.no_grad():
        expected = plain.forward_clip(frames, TEXTS)
        assert torch.equal(none.forward_clip(frames, TEXTS), expected)
        # an untrained window is the identity (its last conv starts at zero)
        assert torch.allclose(window.forward_clip(frames, TEXTS), expected, atol=1e-5)


def test_forward_clip_none_is_the_per_frame_decode_loop(build_tiny, random_frames):
    model = build_tiny().eval()
    frames = random_frames(1, 3, 3, 128, 128)
    with torch.no_grad():
        clip = model.forward_clip(frames.expand(2, -1, -1, -1, -1), TEXTS)
        text, state = model.encode_text(TEXTS), model.init_track_state(2)
        for t in range(3):
            logits, _, state = model.decode(model.encode_image(frames[:, t]), text, state)
            assert torch.allclose(clip[:, t], logits[:, 0], atol=1e-5)


@pytest.mark.parametrize("window", [2, 3])
def test_online_output_at_t_ignores_later_frames(build_tiny, random_frames, window):
    model = _window_model(build_tiny, window)
    frames = random_frames(2, 4, 3, 128, 128)
    changed = frames.clone()
    changed[:, 2:] = random_frames(2, 2, 3, 128, 128, seed=7)
    with torch.no_grad():
        a, b = model.forward_clip(frames, TEXTS), model.forward_clip(changed, TEXTS)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_frame_t_sees_exactly_its_window(build_tiny, random_frames):
    """Tracking off isolates the window: frame 2 with W=2 depends on frame 1, not frame 0."""
    model = _window_model(build_tiny, 2, tracking=False)
    frames = random_frames(1, 3, 3, 128, 128)
    other_first, other_second = frames.clone(), frames.clone()
    other_first[:, 0] = random_frames(1, 3, 128, 128, seed=5)[0]
    other_second[:, 1] = random_frames(1, 3, 128, 128, seed=5)[0]
    with torch.no_grad():
        base = model.forward_clip(frames, TEXTS[:1])
        first = model.forward_clip(other_first, TEXTS[:1])
        second = model.forward_clip(other_second, TEXTS[:1])
    assert not torch.allclose(base[:, 1], first[:, 1])  # frame 1 sees frame 0
    assert torch.equal(base[:, 2], first[:, 2])  # frame 2 does not
    assert not torch.allclose(base[:, 2], second[:, 2])  # … but sees frame 1


def test_still_video_has_no_motion_signal():
    """Equal frames give zero differences: the window sees the frame alone."""
    window = MotionWindow(dim=8, patch_dim=6, window=3)
    _randomise(window)
    frame, patches = torch.randn(1, 8, 4, 4), torch.randn(1, 4, 4, 6)
    alone, state = window.step(frame, patches, FrameWindow())
    again, state = window.step(frame, patches, state)
    assert torch.allclose(alone, again) and len(state.frames) == 2
    moved, _ = window.step(frame, patches.roll(1, dims=2), state)
    assert not torch.allclose(moved, alone)


def test_window_state_is_bounded_and_predictor_matches_forward_clip(build_tiny):
    model = _window_model(build_tiny, 3)
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(12)]
    sizes = []
    original = model.attend_past

    def recording(image, window):
        out = original(image, window)
        sizes.append(len(out[1].frames))
        return out

    model.attend_past = recording
    outputs = list(OnlinePredictor(model, device="cpu").track(video, TEXTS))
    assert sizes == [1, 2] + [2] * 10  # W-1 frames kept, however long the video
    clip = torch.from_numpy(np.stack(video)).permute(0, 3, 1, 2).unsqueeze(0)
    with torch.no_grad():
        logits = model.forward_clip(clip.expand(2, -1, -1, -1, -1), TEXTS)
    for t, out in enumerate(outputs):
        assert np.allclose(out.probs, logits[:, t].sigmoid().numpy(), atol=1e-4)


def test_gradients_reach_the_window(build_tiny, random_frames):
    model = build_tiny(temporal="window", trainable=["temporal", "mask_decoder"]).train()
    assert "temporal" in model.param_groups()
    logits = model.forward_clip(random_frames(2, 2, 3, 128, 128), TEXTS)
    logits.sigmoid().mean().backward()
    assert all(p.grad is not None for p in model.temporal.parameters())
    assert model.temporal.mix[-1].weight.grad.abs().sum() > 0


def test_bad_settings_are_clear_errors(build_tiny):
    with pytest.raises(ConfigError, match="model.temporal"):
        build_tiny(temporal="memory_bank")
    with pytest.raises(ValidationError, match="temporal"):
        ModelConfig(temporal="lstm")
    with pytest.raises(ValidationError, match="temporal_window"):
        ModelConfig(temporal="window", temporal_window=1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        MotionWindow(dim=8, patch_dim=8, window=1)


def test_cost_volume_peaks_where_the_content_came_from():
    """Content that moved one cell left (and one up) since the past frame matches the past
    frame's cell one to the right (one down): that displacement's channel is the largest."""
    window = MotionWindow(dim=16, patch_dim=4, window=2, radius=2)
    past = torch.randn(1, 16, 8, 8)
    current = past.roll(shifts=(-1, -1), dims=(2, 3))  # moved up-left
    volume = window.correlation(current, past)
    assert volume.shape == (1, 25, 8, 8)
    inner = volume[0, :, 2:6, 2:6].flatten(1)
    best = inner.argmax(dim=0)
    dy, dx = best // 5 - 2, best % 5 - 2
    assert (dy == 1).all() and (dx == 1).all()
    assert torch.allclose(inner.max(dim=0).values, torch.ones(16))  # cosine 1 at the match
