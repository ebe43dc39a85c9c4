"""Joint clip augmentation: one set of random parameters for every frame of a clip.

Photometric jitter (brightness, contrast, saturation), a random crop, a horizontal flip
that swaps "left"/"right" in the expression, then SAM's resize to longest side S
(:func:`refsam.modeling.preprocess.resize_frame` / :func:`resize_mask`) and zero padding
to S×S. A 1-frame image repeated as a T-frame pseudo-clip therefore gets T identical
frames. Shapes: frames T×H×W×3 uint8, masks K lists (one per expression sharing the
clip) of T H×W bool, valid T×H×W bool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from refsam.config import AugmentConfig
from refsam.modeling.preprocess import resize_frame, resize_mask, resized_shape

_LEFT_RIGHT = re.compile(r"\b(left|right)(?=\b|most|ward)", re.IGNORECASE)


@dataclass(frozen=True)
class AugmentParams:
    """One draw: crop box (top, left, height, width), flip, photometric factors."""

    crop: tuple[int, int, int, int]
    flip: bool
    brightness: float
    contrast: float
    saturation: float


def flip_text(text: str) -> str:
    """Swap left↔right (keeping capitalisation), as a horizontal flip mirrors the scene."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(1)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, text)


def sample_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    target: np.ndarray | None,
    config: AugmentConfig,
) -> AugmentParams:
    """Draw one set of parameters; the crop keeps part of ``target`` (H×W bool) if it can."""
    crop = (0, 0, height, width)
    if rng.random() < config.crop_prob:
        for _ in range(config.crop_tries):
            h = int(round(height * rng.uniform(config.crop_min_scale, 1.0)))
            w = int(round(width * rng.uniform(config.crop_min_scale, 1.0)))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            if target is None or not target.any() or target[top : top + h, left : left + w].any():
                crop = (top, left, h, w)
                break
    return AugmentParams(
        crop=crop,
        flip=bool(rng.random() < config.flip_prob),
        brightness=float(rng.uniform(1 - config.brightness, 1 + config.brightness)),
        contrast=float(rng.uniform(1 - config.contrast, 1 + config.contrast)),
        saturation=float(rng.uniform(1 - config.saturation, 1 + config.saturation)),
    )


def photometric(frame: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Brightness, contrast and saturation jitter of an H×W×3 uint8 frame."""
    x = frame.astype(np.float32) * params.brightness
    mean = x.mean()
    x = (x - mean) * params.contrast + mean
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * params.saturation + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_clip(
    frames: list[np.ndarray],
    masks: list[list[np.ndarray]],
    valid: list[np.ndarray],
    params: AugmentParams,
) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[np.ndarray]]:
    """Apply one parameter draw to every frame, every expression's masks and every valid
    map of a clip (``masks``: K lists of T masks, one list per expression)."""
    frames = [photometric(geometric(frame, params), params) for frame in frames]
    masks = [[geometric(mask, params) for mask in track] for track in masks]
    return frames, masks, [geometric(ok, params) for ok in valid]


def geometric(array: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The crop and flip of one draw applied to an H×W(×…) frame or map (contiguous copy)."""
    top, left, h, w = params.crop
    array = array[top : top + h, left : left + w]
    return np.ascontiguousarray(array[:, ::-1] if params.flip else array)


def resize_and_pad(
    frames: list[np.ndarray],
    masks: list[list[np.ndarray]],
    valid: list[np.ndarray],
    img_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Resize to longest side ``img_size`` and zero-pad bottom/right to S×S.

    Returns frames T×3×S×S uint8, masks K×T×S×S float32 (K lists of T masks in),
    valid T×S×S bool (False on padding), and the (h, w) before padding.
    """
    t = len(frames)
    h, w = resized_shape(frames[0].shape[0], frames[0].shape[1], img_size)
    out_f = np.zeros((t, 3, img_size, img_size), dtype=np.uint8)
    out_m = np.zeros((len(masks), t, img_size, img_size), dtype=np.float32)
    out_v = np.zeros((t, img_size, img_size), dtype=bool)
    for i, (frame, ok) in enumerate(zip(frames, valid, strict=True)):
        out_f[i, :, :h, :w] = resize_frame(frame, img_size).transpose(2, 0, 1)
        out_v[i, :h, :w] = resize_mask(ok, img_size)
    for k, track in enumerate(masks):
        for i, mask in enumerate(track):
            out_m[k, i, :h, :w] = resize_mask(mask, img_size)
    return out_f, out_m, out_v, (h, w)
