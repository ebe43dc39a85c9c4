"""Online video predictor: one pass over the frames, many expressions (MODEL.md "Inference").

Per frame the image encoder runs **once** for all expressions; the light heads then run
per expression with its track state. Nothing is accumulated across frames: the state is
the :class:`~refsam.modeling.features.TrackState` (one track token per expression) and,
with ``model.temporal: window``, the :class:`~refsam.modeling.temporal.FrameWindow` (the
last W-1 frame embeddings, shared by the expressions), so memory does not grow with the
video's length. Preprocessing is
:mod:`refsam.modeling.preprocess` (the one shared implementation); frames come from
:func:`refsam.eval.frames.iter_frames` (a folder, a video file or arrays).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from refsam.errors import UserError
from refsam.eval.frames import FrameSource, iter_frames
from refsam.modeling.device import resolve_device
from refsam.modeling.preprocess import resize_frame, restore_size
from refsam.modeling.refsam import RefSAM

log = logging.getLogger(__name__)


@dataclass
class FramePrediction:
    """One frame's output for N expressions, at the frame's original H×W."""

    index: int
    masks: np.ndarray  # N×H×W bool (probs > threshold)
    probs: np.ndarray  # N×H×W float32 mask probabilities
    scores: np.ndarray  # N float32, the decoder's IoU prediction


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
        window = model.init_frame_window()
        for index, frame in enumerate(iter_frames(frames)):
            resized = resize_frame(frame, model.img_size)
            pixels = torch.tensor(resized, device=self.device).permute(2, 0, 1).unsqueeze(0)
            image, window = model.attend_past(model.encode_image(pixels), window)
            logits, iou, state = model.decode(image, text, state)
            probs = restore_size(logits, resized.shape[:2], frame.shape[:2]).sigmoid()[:, 0]
            probs_np = probs.float().cpu().numpy()
            yield FramePrediction(
                index=index,
                masks=probs_np > self.threshold,
                probs=probs_np,
                scores=iou[:, 0].float().cpu().numpy(),
            )
