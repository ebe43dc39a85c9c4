"""Mask overlays a person can look at: PNG contact sheets and browser-playable videos.

OpenCV here cannot write H.264, and ``mp4v`` files do not play in browsers, so videos are
VP9 ``.webm`` (fourcc ``VP90``; VP8 ``VP80`` as a fallback). Colours are per expression;
contact-sheet tiles carry their frame number.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)  # fmt: skip
"""RGB colour of expression i (cycled)."""


FFMPEG_TAG_NOTICE = re.compile(r"FFMPEG: tag 0x[0-9a-f]+/'.{4}' is not supported with codec id")
"""OpenCV's notice when a fourcc has no tag in the container (always so for WebM)."""


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
    images: Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    columns: int = 4,
    max_width: int = 1600,
    gap: int = 4,
) -> np.ndarray:
    """Tile H×W×3 uint8 images (resized to the first one's size) into one RGB image;
    ``labels[i]`` (e.g. the frame number) is written in the top-left corner of tile i."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"contact_sheet: {len(labels)} labels for {len(images)} images")
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
        if labels is not None:
            label_tile(tile, labels[index])
        y, x = r * (tile_h + gap), c * (tile_w + gap)
        sheet[y : y + tile_h, x : x + tile_w] = tile
    return sheet


def label_tile(tile: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in white on a black box in the top-left corner of ``tile`` (in place)."""
    scale = min(0.6, max(0.3, tile.shape[1] / 700))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(tile, (0, 0), (text_w + 6, text_h + baseline + 6), (0, 0, 0), -1)
    cv2.putText(
        tile, text, (3, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
        cv2.LINE_AA,
    )  # fmt: skip
    return tile


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
    """A contact sheet of up to ``max_frames`` evenly spaced frames (each tile labelled with
    its frame index) with every expression's mask (``masks[e][t]``) overlaid, plus a colour
    legend; written as PNG."""
    picks = np.unique(
        np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    )
    tiles = [overlay_masks(frames[t], [m[t] for m in masks]) for t in picks]
    sheet = contact_sheet(tiles, labels=[f"frame {t}" for t in picks], columns=columns)
    return write_png(path, np.concatenate([sheet, legend(texts, sheet.shape[1])], axis=0))


def write_webm(path: Path, frames: Iterable[np.ndarray], *, fps: float = 6.0) -> Path:
    """Write RGB uint8 frames (all one size) as a VP9 ``.webm`` (VP8 if VP9 is missing)."""
    if not fps > 0:
        raise ValueError(f"{path}: frame rate {fps}: expected a positive number")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size = None
    try:
        for frame in frames:
            if writer is None:
                size = (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2)
                writer = _open_webm_writer(path, fps, size)
            bgr = cv2.cvtColor(np.ascontiguousarray(frame[: size[1], : size[0]]), cv2.COLOR_RGB2BGR)
            writer.write(bgr)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"{path}: no frames to write")
    return path


def _open_webm_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An open VP9 (else VP8) writer. OpenCV's FFMPEG backend prints a ``tag … is not
    supported`` notice straight to the process's stderr for every fourcc it is given for
    WebM (the container has no codec tags; the file is fine), so that one line is dropped."""
    for fourcc in ("VP90", "VP80"):
        with native_stderr_without(FFMPEG_TAG_NOTICE):
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer
        writer.release()
    raise OSError(f"{path}: OpenCV has no VP9/VP8 writer for .webm")


@contextmanager
def native_stderr_without(pattern: re.Pattern[str]) -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 inside the block; afterwards
    pass on every line except those matching ``pattern`` (logged at debug level).

    For short calls only: while it runs, other threads' stderr output is held back too.
    Where descriptor 2 cannot be duplicated, the block runs unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if pattern.search(line):
                    log.debug("dropped from stderr: %s", line)
                else:
                    print(line, file=sys.stderr)
