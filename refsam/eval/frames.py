"""Video input: RGB frames from a folder of images, a video file, or arrays; a cheap probe.

No torch here: :func:`probe_video` checks a source (exists, has images, OpenCV can decode
its first frame) and reads its frame names, count and frame rate, so the CLI can refuse a
bad ``--video`` before the model loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from refsam.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FrameSource = str | Path | Iterable[np.ndarray]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learnt about a frame folder or video file."""

    path: Path
    names: tuple[str, ...] | None  # file stems of a frame folder; None for a video file
    count: int  # exact for a folder; the container's (approximate) count for a video file
    fps: float | None  # a video file's frame rate; None for a folder (or when unknown)

    def frame_name(self, index: int) -> str:
        """The name a frame's outputs carry: the image's stem, or the 5-digit index."""
        return self.names[index] if self.names is not None else f"{index:05d}"


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def probe_video(source: str | Path) -> VideoInfo:
    """Check that ``source`` is a readable frame folder or video file; DataError if not."""
    path = Path(source)
    if path.is_dir():
        names = tuple(p.stem for p in _image_files(path))
        return VideoInfo(path, names, len(names), None)
    if not path.is_file():
        raise DataError(f"{path}: no such frame folder or video file")
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not capture.read()[0]:
            raise DataError(f"{path}: the video has no readable frames")
    finally:
        capture.release()
    return VideoInfo(path, None, max(count, 1), fps if 0 < fps < 1000 else None)


def _folder_frames(folder: Path) -> Iterator[np.ndarray]:
    for path in _image_files(folder):
        with Image.open(path) as image:
            yield np.asarray(image.convert("RGB"))


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: OpenCV cannot open this video")
    try:
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if count == 0:
            raise DataError(f"{path}: the video has no readable frames")
    finally:
        capture.release()


def iter_frames(source: FrameSource) -> Iterator[np.ndarray]:
    """H×W×3 uint8 RGB frames from a folder of images, a video file, or an iterable of arrays."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            yield from _folder_frames(path)
        elif path.is_file():
            yield from _video_frames(path)
        else:
            raise DataError(f"{path}: no such frame folder or video file")
        return
    for index, frame in enumerate(source):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise DataError(
                f"frame {index}: expected H×W×3 uint8 RGB, got {frame.shape} {frame.dtype}"
            )
        yield frame
