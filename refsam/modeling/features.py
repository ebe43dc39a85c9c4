"""Typed containers passed between RefSAM's stages (encode_image → decode → next state)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from refsam.modeling.text_encoder import TextFeatures

__all__ = ["ImageFeatures", "TextFeatures", "TrackState"]


@dataclass
class ImageFeatures:
    """Text-independent image features of a batch of frames.

    ``embedding`` B×C×h×w (SAM's neck output); ``intermediates`` the encoder levels used by
    the hierarchical dense attention, each B×h×w×D (empty for the other dense paths);
    ``patches`` the patch embedding B×h×w×D (before position embedding and blocks: the
    level the motion window compares across frames; None when nothing needs it); ``pixels``
    the normalised input at the pixel-motion resolution B×3×H'×W' and ``motion`` the pixel
    motion since the frame before B×3×h×w (both ``temporal: flow`` only).
    """

    embedding: torch.Tensor
    intermediates: list[torch.Tensor] = field(default_factory=list)
    patches: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    motion: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embedding.shape[0]

    def index(self, rows: torch.Tensor | slice | int) -> ImageFeatures:
        """The features of some frames (rows of the batch); a tensor of rows may repeat one
        (expressions sharing a frame).

        Tensor rows go through ``index_select``: the backward of ``embedding[rows]``
        (``index_put_`` with accumulate) adds the repeated rows' gradients with atomic adds
        on CPU threads, in a different order from run to run, so training was not
        bit-reproducible; ``index_select``'s backward adds them in order.
        """
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)

        def take(x: torch.Tensor) -> torch.Tensor:
            return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)

        def maybe(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else take(x)

        return ImageFeatures(
            take(self.embedding),
            [take(x) for x in self.intermediates],
            maybe(self.patches),
            maybe(self.pixels),
            maybe(self.motion),
        )


@dataclass
class TrackState:
    """What one frame hands to the next: the track token B×C (None when tracking is off).

    This is all the state of an online video, so memory does not grow with its length.
    """

    track_token: torch.Tensor | None = None

    def detach(self) -> TrackState:
        token = None if self.track_token is None else self.track_token.detach()
        return TrackState(token)
