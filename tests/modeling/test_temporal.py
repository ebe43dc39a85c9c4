"""The temporal path (model.temporal: window | flow): online, bounded, identity when
untrained, ``none`` unchanged, the training (forward_clip) and inference (predictor) paths
agree, and flow's block matching finds which way things moved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from refsam.config import ModelConfig
from refsam.errors import ConfigError
from refsam.eval.predictor import OnlinePredictor
from refsam.modeling.temporal import FrameWindow, MotionGrounding, MotionWindow, pixel_motion

TEXTS = ["the red circle moving left", "the square that is not moving"]


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised last conv weights, so the window changes the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


PATHS = ["window", "flow"]


def _window_model(build_tiny, window: int = 2, tracking: bool = True, temporal: str = "window"):
    model = build_tiny(temporal=temporal, temporal_window=window, tracking=tracking).eval()
    _randomise(model.temporal)
    return model


@pytest.mark.parametrize("temporal", PATHS)
def test_none_builds_todays_model_and_window_adds_only_its_module(
    build_tiny, random_frames, temporal
):
    plain = build_tiny(seed=3).eval()
    none = build_tiny(seed=3, temporal="none").eval()
    window = build_tiny(seed=3, temporal=temporal).eval()
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


@pytest.mark.parametrize(("window", "temporal"), [(2, "window"), (3, "window"), (3, "flow")])
def test_online_output_at_t_ignores_later_frames(build_tiny, random_frames, window, temporal):
    model = _window_model(build_tiny, window, temporal=temporal)
    frames = random_frames(2, 4, 3, 128, 128)
    changed = frames.clone()
    changed[:, 2:] = random_frames(2, 2, 3, 128, 128, seed=7)
    with torch.no_grad():
        a, b = model.forward_clip(frames, TEXTS), model.forward_clip(changed, TEXTS)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


@pytest.mark.parametrize("temporal", PATHS)
def test_frame_t_sees_exactly_its_window(build_tiny, random_frames, temporal):
    """Tracking off isolates the window: frame 2 with W=2 depends on frame 1, not frame 0."""
    model = _window_model(build_tiny, 2, tracking=False, temporal=temporal)
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
    alone, _, state = window.step((frame, patches, None), FrameWindow())
    again, _, state = window.step((frame, patches, None), state)
    assert torch.allclose(alone, again) and len(state.frames) == 2
    moved, _, _ = window.step((frame, patches.roll(1, dims=2), None), state)
    assert not torch.allclose(moved, alone)


@pytest.mark.parametrize("temporal", PATHS)
def test_window_state_is_bounded_and_predictor_matches_forward_clip(build_tiny, temporal):
    model = _window_model(build_tiny, 3, temporal=temporal)
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


@pytest.mark.parametrize("temporal", PATHS)
def test_gradients_reach_the_window(build_tiny, random_frames, temporal):
    model = build_tiny(temporal=temporal, trainable=["temporal", "mask_decoder"]).train()
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


def _moving_square(du: int, dv: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel levels (1×3×64×64, normalised-like values, light noise) of a 16-px square in
    frame t-1 and moved by (du, dv) pixels in frame t."""
    generator = torch.Generator().manual_seed(seed)
    previous, current = torch.zeros(2, 1, 3, 64, 64)
    previous[..., 20:36, 20:36] = 1.5
    current[..., 20 + dv : 36 + dv, 20 + du : 36 + du] = 1.5
    noise = torch.randn(2, 1, 3, 64, 64, generator=generator) * 0.04
    return current + noise[0], previous + noise[1]


@pytest.mark.parametrize(("du", "dv"), [(-2, 0), (3, 0), (0, 2), (0, -1), (2, -2)])
def test_pixel_motion_finds_which_way_the_square_moved(du, dv):
    motion = pixel_motion(*_moving_square(du, dv), radius=3)
    assert motion.shape == (1, 3, 16, 16)
    u, v, confidence = motion[0]
    sure = confidence > 0.5
    assert sure.sum() >= 16  # the square's edge cells, nothing else
    assert not sure[:3].any() and not sure[:, :3].any()  # far background: unsure
    # where the edge across the motion is, the displacement is found to ± 0.25 px
    if du:
        edge = u[sure] / confidence[sure]
        assert (edge - du).abs().min() < 0.25 and (edge * du >= -0.25).all()
    if dv:
        edge = v[sure] / confidence[sure]
        assert (edge - dv).abs().min() < 0.25 and (edge * dv >= -0.25).all()
    # summed over the object's cells, the motion points the right way (and not across it)
    across, along = float(u[sure].sum()), float(v[sure].sum())
    assert across * du > 0 or du == 0
    assert along * dv > 0 or dv == 0
    if du == 0:
        assert abs(across) < 0.1 * abs(along)


def test_pixel_motion_of_a_still_frame_is_zero_and_flips_with_the_video():
    current, previous = _moving_square(0, 0)
    still = pixel_motion(current, current, radius=2)
    # zero away from the square; its corners lean a little (an L-shaped edge is not
    # symmetric under shifts along it), far less than a 1-px motion
    assert torch.allclose(still[:, :2, :4], torch.zeros_like(still[:, :2, :4]), atol=1e-5)
    assert still[:, :2].abs().max() < 0.3
    assert float(still[:, :2].sum(dim=(2, 3)).abs().max()) < 0.1  # the leans cancel
    moved = pixel_motion(*_moving_square(-2, 0), radius=3)
    flipped = pixel_motion(*(x.flip(-1) for x in _moving_square(-2, 0)), radius=3)
    # a horizontal flip turns "moving left" into "moving right": u changes sign
    assert float(moved[:, 0].sum()) < 0 < float(flipped[:, 0].sum())
    assert torch.allclose(flipped[:, 0].flip(-1), -moved[:, 0], atol=1e-4)


def test_flow_needs_its_pixel_level():
    window = MotionWindow(dim=8, patch_dim=6, window=2, pixel_radius=2)
    frame, patches = torch.randn(1, 8, 4, 4), torch.randn(1, 4, 4, 6)
    with pytest.raises(ValueError, match="pixel level"):
        window.step((frame, patches, None), FrameWindow())
    fused, motion, state = window.step((frame, patches, torch.randn(1, 3, 16, 16)), FrameWindow())
    assert fused.shape == frame.shape and state.frames[0][2].shape == (1, 3, 16, 16)
    assert motion.shape == (1, 3, 4, 4)


def test_motion_grounding_reads_the_words_and_the_cell_motion():
    """A head that attends to one word and asks for u < 0 scores left-moving cells high for
    the sentence with that word, ignores padding, and broadcasts one frame to B sentences."""
    torch.manual_seed(0)
    grounding = MotionGrounding(dim=4, text_dim=4, heads=1)
    grounding.norm = torch.nn.Identity()  # hand-set weights below read the raw words
    left = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with torch.no_grad():
        grounding.key.copy_(left.view(1, 4) * 50)  # attend to the "left" word
        grounding.value.weight.zero_()
        grounding.value.bias.zero_()
        grounding.value.weight[0, 0] = -1.0  # the "left" word asks for u < 0 (descriptor 0 = u)
        grounding.out.weight.fill_(1.0)
        grounding.to_logit.weight.fill_(2.0)
    words = torch.zeros(2, 3, 4)
    words[0, 1] = left  # sentence 0 has the word, sentence 1 not
    words[:, 0, 1] = words[:, 2, 2] = 1.0
    mask = torch.tensor([[True, True, False], [True, True, False]])
    motion = torch.zeros(1, 3, 2, 2)
    motion[0, 0, 0, 0], motion[0, 2, 0, 0] = -2.0, 1.0  # cell (0, 0) moves left
    motion[0, 0, 1, 1], motion[0, 2, 1, 1] = 2.0, 1.0  # cell (1, 1) moves right
    out, bias = grounding(motion, words, mask)
    assert out.shape == (2, 4, 2, 2) and bias.shape == (2, 1, 2, 2)
    assert torch.allclose(bias, 2 * out[:, :1])
    assert out[0, 0, 0, 0] > 0.9 and out[0, 0, 1, 1] < -0.9  # left-moving cell preferred
    assert torch.allclose(out[1], torch.zeros_like(out[1]), atol=0.05)  # no "left" word
    padded = words.clone()
    padded[:, 2] = left * 3  # a padding position holding "left" changes nothing
    assert torch.allclose(grounding(motion, padded, mask)[0], out)


def test_untrained_grounding_is_zero_and_learns():
    grounding = MotionGrounding(dim=8, text_dim=6, heads=2)
    words, mask = torch.randn(3, 4, 6), torch.ones(3, 4, dtype=torch.bool)
    motion = torch.randn(3, 3, 5, 5)
    out, bias = grounding(motion, words, mask)
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(bias, torch.zeros_like(bias))
    (out.square() + out).sum().add(bias.sum()).backward()
    # no saddle: the queries get a gradient through the logit bias from the start
    assert grounding.value.weight.grad.abs().sum() > 0
