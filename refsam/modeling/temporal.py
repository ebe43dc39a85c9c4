"""Temporal path (``model.temporal: window``): frame t's features see the frames just before it.

RefSAM's only memory is one track token per expression, so it cannot tell "the circle
moving left" from a still circle of the same look. :class:`MotionWindow` gives the
per-frame image embedding a short, fixed window of the frames before it (SAM 2 keeps a
small bank of past frame features; SAMWISE lets frame features see their neighbours
before the cross-modal fusion). It is

- **online**: frame t uses frames t-1 … t-W+1 only (a frame before the video's start is
  replaced by frame 0, so frame 0 sees itself and no motion);
- **bounded**: the state is the last W-1 frames' features (:class:`FrameWindow`),
  whatever the video's length;
- **text-independent and shared**: it runs once per frame, before the vision-language
  fusion (the hierarchical dense attention and the mask decoder's two-way attention),
  so all expressions of a frame share it and the text can then attend to motion;
- **free to switch**: the motion feature reaches the decoder of every frame, next to
  the track token, so the prediction can move to another object when motion
  disambiguates after frame 0.

Two levels are compared across frames. The **patch level** (SAM's patch embedding, before
position embedding and attention: linear in each cell's pixels, so where an edge sits
inside a cell is still there) gives the temporal difference, projected to C: a moving
object leaves a signed pattern at its leading and trailing edges, a still one none. The
**embedding** (the neck output) gives a local cost volume: the cosine similarity of each
cell with the past frame's cells within ``radius`` (where the content came from, as in
optical-flow networks). ``[E_t, diff_1, cost_1, …]`` is mixed by a 3×3 conv, LayerNorm2d,
GELU and a 1×1 conv and added to E_t. The last conv starts at zero, so an untrained window
is the identity.

Shapes: embeddings b×C×h×w (C = prompt_dim), patch levels b×h×w×D (D = the encoder width).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.nn import functional as F

Frame = tuple[torch.Tensor, torch.Tensor]  # (embedding b×C×h×w, patch level b×h×w×D)


@dataclass(frozen=True)
class FrameWindow:
    """What a video hands to its next frame: the last W-1 frames' (embedding, patch level),
    most recent first. Empty before frame 0."""

    frames: tuple[Frame, ...] = ()


class MotionWindow(nn.Module):
    """Fuse frame t's embedding with its W-1 predecessors (see the module docstring)."""

    def __init__(self, *, dim: int, patch_dim: int, window: int = 2, radius: int = 2) -> None:
        super().__init__()
        if window < 2:
            raise ValueError(f"a motion window needs at least 2 frames, got {window}")
        self.window = window
        self.radius = radius
        self.difference = nn.Conv2d(patch_dim, dim, kernel_size=1, bias=False)  # 0 if still
        per_past = dim + (2 * radius + 1) ** 2
        self.mix = nn.Sequential(
            nn.Conv2d(dim + (window - 1) * per_past, dim, kernel_size=3, padding=1),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size=1),
        )
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)

    def past_slots(self, current: Frame, window: FrameWindow) -> list[Frame]:
        """The W-1 past frames frame t sees: t-1, t-2, … (frame 0 repeated before the
        start; at frame 0 itself, ``current``)."""
        past = window.frames or (current,)
        return [past[min(k, len(past) - 1)] for k in range(self.window - 1)]

    def step(
        self, embedding: torch.Tensor, patches: torch.Tensor, window: FrameWindow
    ) -> tuple[torch.Tensor, FrameWindow]:
        """Frame t: (embedding b×C×h×w, patch level b×h×w×D, window) → (fused b×C×h×w,
        window for frame t+1)."""
        current = (embedding, patches)
        fused = self(current, self.past_slots(current, window))
        return fused, FrameWindow((current, *window.frames)[: self.window - 1])

    def forward(self, current: Frame, past: list[Frame]) -> torch.Tensor:
        """current (b×C×h×w, b×h×w×D), past W-1 such frames (t-1 first) → b×C×h×w."""
        if len(past) != self.window - 1:
            raise ValueError(f"expected {self.window - 1} past frames, got {len(past)}")
        embedding, patches = current
        features = [embedding]
        for past_embedding, past_patches in past:
            change = (patches - past_patches).permute(0, 3, 1, 2)
            features += [self.difference(change), self.correlation(embedding, past_embedding)]
        return embedding + self.mix(torch.cat(features, dim=1))

    def correlation(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Local cost volume b×(2r+1)²×h×w: cosine similarity of each cell of ``current``
        with the cells of ``previous`` within ``radius`` (zero outside the frame). Where
        the content came from, i.e. which way it moved, is the channel that peaks."""
        r = self.radius
        height, width = current.shape[-2:]
        a = F.normalize(current, dim=1)
        b = F.pad(F.normalize(previous, dim=1), (r, r, r, r))
        return torch.stack(
            [
                (a * b[:, :, dy : dy + height, dx : dx + width]).sum(dim=1)
                for dy in range(2 * r + 1)
                for dx in range(2 * r + 1)
            ],
            dim=1,
        )
