"""Online predictor: frame sources, one encoder pass per frame, constant state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from refsam.errors import DataError
from refsam.eval.predictor import OnlinePredictor, iter_frames
from refsam.modeling.preprocess import postprocess_masks, resize_frame

EXPRESSIONS = ["the red circle", "a cat on the left", "the small green triangle moving right"]


def _video(n: int = 3, height: int = 60, width: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def predictor(build_tiny):
    return OnlinePredictor(build_tiny(img_size=64), device="cpu")


def test_masks_at_original_size_and_encoder_once_per_frame(predictor):
    calls = []
    predictor.model.image_encoder.patch_embed.register_forward_hook(lambda *_: calls.append(1))
    outputs = list(predictor.track(_video(4), EXPRESSIONS))
    assert [o.index for o in outputs] == [0, 1, 2, 3]
    assert len(calls) == 4  # once per frame, for all three expressions
    for out in outputs:
        assert out.masks.shape == (3, 60, 80) and out.masks.dtype == bool
        assert out.probs.shape == (3, 60, 80) and out.scores.shape == (3,)
        assert np.array_equal(out.masks, out.probs > 0.5)


def test_each_expression_matches_tracking_it_alone(predictor):
    frames = _video(3)
    together = list(predictor.track(frames, EXPRESSIONS))
    for row, expression in enumerate(EXPRESSIONS):
        alone = list(predictor.track(frames, [expression]))
        for a, b in zip(together, alone, strict=True):
            assert np.allclose(a.probs[row], b.probs[0], atol=1e-4)


def test_matches_the_model_path_with_shared_preprocessing(predictor):
    """Frame 0 equals encode → decode → postprocess done by hand with preprocess.py."""
    model, frame = predictor.model, _video(1)[0]
    first = next(predictor.track([frame], EXPRESSIONS[:1]))
    resized = resize_frame(frame, model.img_size)
    with torch.no_grad():
        pixels = torch.tensor(resized).permute(2, 0, 1)[None]
        image = model.encode_image(pixels)
        logits, _, _ = model.decode(
            image, model.encode_text(EXPRESSIONS[:1]), model.init_track_state(1)
        )
        probs = postprocess_masks(
            logits, resized.shape[:2], frame.shape[:2], model.img_size
        ).sigmoid()
    assert resized.shape[:2] == (48, 64)  # longest side = img_size 64, padded inside the model
    assert np.allclose(first.probs[0], probs[0, 0].numpy(), atol=1e-5)


def test_state_does_not_grow_with_video_length(predictor):
    sizes = []
    original = predictor.model.decode

    def recording_decode(image, text, state):
        sizes.append(sum(t.numel() for t in vars(state).values() if t is not None))
        return original(image, text, state)

    predictor.model.decode = recording_decode
    for _ in predictor.track(_video(6), EXPRESSIONS[:2]):
        pass
    assert len(sizes) == 6 and len(set(sizes)) == 1


def test_folder_and_video_file_sources(tmp_path):
    frames = _video(3, 48, 64)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    read = list(iter_frames(folder))
    assert len(read) == 3 and all(np.array_equal(a, b) for a, b in zip(read, frames, strict=True))

    import cv2

    smooth = [np.full((48, 64, 3), (40 * i, 120, 200), dtype=np.uint8) for i in range(3)]
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for frame in smooth:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    video = list(iter_frames(path))
    assert len(video) == 3 and video[0].shape == (48, 64, 3) and video[0].dtype == np.uint8
    for got, want in zip(video, smooth, strict=True):  # RGB order kept, lossy codec
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8


def test_bad_sources_fail_clearly(tmp_path, predictor):
    with pytest.raises(DataError, match="no such frame folder"):
        list(iter_frames(tmp_path / "missing"))
    with pytest.raises(DataError, match="no image files"):
        list(iter_frames(tmp_path))
    (tmp_path / "broken.mp4").write_bytes(b"nope")
    with pytest.raises(DataError, match="broken.mp4"):
        list(iter_frames(tmp_path / "broken.mp4"))
    with pytest.raises(DataError, match="frame 0"):
        list(iter_frames([np.zeros((4, 4), dtype=np.uint8)]))
    with pytest.raises(ValueError):
        list(predictor.track(_video(1), []))
