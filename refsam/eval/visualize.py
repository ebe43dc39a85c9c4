"""Mask overlays a person can look at: PNG contact sheets and browser-playable videos.

OpenCV here cannot write H.264, and ``mp4v`` files do not play in browsers, so videos are
VP9 ``.webm`` (fourcc ``VP90``; VP8 ``VP80`` as a fallback). Colours are per expression.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)  # fmt: skip
"""RGB colour of expression i (cycled)."""


def colour(index: int) -> tuple[int, int, int]:
    return COLOURS[index % len(COLOURS)]


def overlay_masks(frame: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8 RGB frame with each H×W bool mask blended in its colour and outlined."""
    out = frame.astype(np.float32).copy()
    for index, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        rgb = np.array(colour(index), dtype=np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * rgb
    out_u8 = np.clip(out, 0, 255).astype(np.uint8)
    for index, mask in enumerate(masks):
        contours, _ = cv2.findContours(
            np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out_u8, contours, -1, colour(index), 1)
    return out_u8


def contact_sheet(
    images: Sequence[np.ndarray], *, columns: int = 4, max_width: int = 1600, gap: int = 4
) -> np.ndarray:
    """Tile H×W×3 uint8 images (resized to the first one's size) into one RGB image."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    height, width = images[0].shape[:2]
    columns = max(1, min(columns, len(images)))
    scale = min(1.0, (max_width - gap * (columns - 1)) / (columns * width))
    tile_h, tile_w = max(1, int(height * scale)), max(1, int(width * scale))
    rows = math.ceil(len(images) / columns)
    sheet = np.full(
        (rows * tile_h + gap * (rows - 1), columns * tile_w + gap * (columns - 1), 3), 255, np.uint8
    )
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        tile = cv2.resize(image, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        y, x = r * (tile_h + gap), c * (tile_w + gap)
        sheet[y : y + tile_h, x : x + tile_w] = tile
    return sheet


def legend(texts: Sequence[str], width: int) -> np.ndarray:
    """A white strip listing each expression in its colour (RGB uint8)."""
    line = 18
    strip = np.full((line * max(1, len(texts)) + 6, max(width, 64), 3), 255, np.uint8)
    for index, text in enumerate(texts):
        y = 14 + index * line
        cv2.rectangle(strip, (4, y - 10), (14, y), colour(index), -1)
        cv2.putText(
            strip, text[:120], (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return strip


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: OpenCV could not write the PNG")
    return path


def render_sequence_sheet(
    path: Path,
    frames: Sequence[np.ndarray],
    masks: Sequence[Sequence[np.ndarray]],
    texts: Sequence[str],
    *,
    max_frames: int = 8,
    columns: int = 4,
) -> Path:
    """A contact sheet of up to ``max_frames`` evenly spaced frames with every expression's
    mask (``masks[e][t]``) overlaid, plus a colour legend; written as PNG."""
    picks = np.unique(
        np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    )
    tiles = [overlay_masks(frames[t], [m[t] for m in masks]) for t in picks]
    sheet = contact_sheet(tiles, columns=columns)
    return write_png(path, np.concatenate([sheet, legend(texts, sheet.shape[1])], axis=0))


def write_webm(path: Path, frames: Iterable[np.ndarray], *, fps: float = 6.0) -> Path:
    """Write RGB uint8 frames (all one size) as a VP9 ``.webm`` (VP8 if VP9 is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size = None
    try:
        for frame in frames:
            if writer is None:
                size = (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2)
                for fourcc in ("VP90", "VP80"):
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
                    if writer.isOpened():
                        break
                    writer.release()
                    writer = None
                if writer is None:
                    raise OSError(f"{path}: OpenCV has no VP9/VP8 writer for .webm")
            bgr = cv2.cvtColor(np.ascontiguousarray(frame[: size[1], : size[0]]), cv2.COLOR_RGB2BGR)
            writer.write(bgr)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"{path}: no frames to write")
    return path
