"""Online video predictor: one pass over the frames, many expressions (MODEL.md "Inference").

Per frame the image encoder runs **once** for all expressions; the light heads then run
per expression with its track state. Nothing is accumulated across frames: the only
state is the :class:`~refsam.modeling.features.TrackState` (one track token per
expression), so memory does not grow with the video's length. Preprocessing is
:mod:`refsam.modeling.preprocess` (the one shared implementation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from refsam.errors import DataError, UserError
from refsam.modeling.preprocess import resize_frame, restore_size
from refsam.modeling.refsam import RefSAM

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FrameSource = str | Path | Iterable[np.ndarray]


@dataclass
class FramePrediction:
    """One frame's output for N expressions, at the frame's original H×W."""

    index: int
    masks: np.ndarray  # N×H×W bool (probs > threshold)
    probs: np.ndarray  # N×H×W float32 mask probabilities
    scores: np.ndarray  # N float32, the decoder's IoU prediction


def _folder_frames(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    for path in files:
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


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class OnlinePredictor:
    """Segment N expressions through a video, frame by frame (online).

    Args:
        model: a RefSAM model (moved to ``device`` and put in eval mode).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, … .
        threshold: probability above which a pixel is in the mask, in (0, 1).
    """

    def __init__(
        self, model: RefSAM, *, device: str | torch.device = "auto", threshold: float = 0.5
    ) -> None:
        if not 0 < threshold < 1:
            raise UserError(f"mask threshold {threshold}: expected a value in (0, 1)")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.threshold = threshold

    @torch.inference_mode()
    def track(self, frames: FrameSource, expressions: list[str]) -> Iterator[FramePrediction]:
        """Yield a :class:`FramePrediction` per frame, in order, for ``expressions``."""
        if not expressions:
            raise ValueError("expected at least one expression")
        model = self.model
        text = model.encode_text(list(expressions))
        state = model.init_track_state(len(expressions))
        for index, frame in enumerate(iter_frames(frames)):
            resized = resize_frame(frame, model.img_size)
            pixels = torch.tensor(resized, device=self.device).permute(2, 0, 1).unsqueeze(0)
            image = model.encode_image(pixels)
            logits, iou, state = model.decode(image, text, state)
            probs = restore_size(logits, resized.shape[:2], frame.shape[:2]).sigmoid()[:, 0]
            probs_np = probs.float().cpu().numpy()
            yield FramePrediction(
                index=index,
                masks=probs_np > self.threshold,
                probs=probs_np,
                scores=iou[:, 0].float().cpu().numpy(),
            )
