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

``temporal: flow`` adds a third, **pixel** level that is not learned: block matching of the
normalised input at 4 pixels per embedding cell (:func:`pixel_motion`). For each cell it
gives the displacement (u, v) since the past frame, in pixels, and how sure that is: the
direction of motion, explicitly. It joins the window's inputs, and
:class:`MotionGrounding` ties it to the words (a text-conditioned term of the dense
prompt, per expression), so "moving left" can select the cells that move left. The
window alone, learned from scratch, neither computed direction nor tied it to the words
within the demo budget (issue 20's ablation).

Shapes: embeddings b×C×h×w (C = prompt_dim), patch levels b×h×w×D (D = the encoder width),
pixel levels b×3×4h×4w (None without ``flow``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.nn import functional as F

# (embedding b×C×h×w, patch level b×h×w×D, pixel level b×3×4h×4w or None)
Frame = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
PIXELS_PER_CELL = 4  # the pixel level's resolution: 4 × 4 pixels per embedding cell
MOTION_CHANNELS = 3  # pixel_motion's (u, v, confidence)
DESCRIPTOR_CHANNELS = 4  # MotionGrounding's (u, v, speed, confidence)


@dataclass(frozen=True)
class FrameWindow:
    """What a video hands to its next frame: the last W-1 frames' (embedding, patch level),
    most recent first. Empty before frame 0."""

    frames: tuple[Frame, ...] = ()


class MotionWindow(nn.Module):
    """Fuse frame t's embedding with its W-1 predecessors (see the module docstring)."""

    def __init__(
        self,
        *,
        dim: int,
        patch_dim: int,
        window: int = 2,
        radius: int = 2,
        pixel_radius: int | None = None,
        text_dim: int | None = None,
    ) -> None:
        """``pixel_radius`` (pixels of the pixel level) turns on :func:`pixel_motion` and
        the :class:`MotionGrounding` over the text encoder's words (width ``text_dim``)."""
        super().__init__()
        if window < 2:
            raise ValueError(f"a motion window needs at least 2 frames, got {window}")
        self.window = window
        self.radius = radius
        self.pixel_radius = pixel_radius
        self.difference = nn.Conv2d(patch_dim, dim, kernel_size=1, bias=False)  # 0 if still
        per_past = dim + (2 * radius + 1) ** 2 + (MOTION_CHANNELS if pixel_radius else 0)
        self.mix = nn.Sequential(
            nn.Conv2d(dim + (window - 1) * per_past, dim, kernel_size=3, padding=1),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size=1),
        )
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)
        self.grounding = (
            MotionGrounding(dim=dim, text_dim=text_dim or dim) if pixel_radius else None
        )

    def past_slots(self, current: Frame, window: FrameWindow) -> list[Frame]:
        """The W-1 past frames frame t sees: t-1, t-2, … (frame 0 repeated before the
        start; at frame 0 itself, ``current``)."""
        past = window.frames or (current,)
        return [past[min(k, len(past) - 1)] for k in range(self.window - 1)]

    def step(
        self, current: Frame, window: FrameWindow
    ) -> tuple[torch.Tensor, torch.Tensor | None, FrameWindow]:
        """Frame t: ((embedding b×C×h×w, patch level b×h×w×D, pixels), window) → (fused
        b×C×h×w, motion since t-1 b×3×h×w or None, window for frame t+1)."""
        fused, motion = self(current, self.past_slots(current, window))
        return fused, motion, FrameWindow((current, *window.frames)[: self.window - 1])

    def forward(
        self, current: Frame, past: list[Frame]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """current (b×C×h×w, b×h×w×D, pixels), past W-1 such frames (t-1 first) → (fused
        b×C×h×w, :func:`pixel_motion` since t-1 or None without the pixel level)."""
        if len(past) != self.window - 1:
            raise ValueError(f"expected {self.window - 1} past frames, got {len(past)}")
        embedding, patches, pixels = current
        if self.pixel_radius and pixels is None:
            raise ValueError("temporal: flow needs the pixel level: encode_image keeps it")
        features, motions = [embedding], []
        for past_embedding, past_patches, past_pixels in past:
            change = (patches - past_patches).permute(0, 3, 1, 2)
            features += [self.difference(change), self.correlation(embedding, past_embedding)]
            if self.pixel_radius:
                motions.append(
                    pixel_motion(pixels, past_pixels, radius=self.pixel_radius).to(embedding)
                )
                features.append(motions[-1])
        fused = embedding + self.mix(torch.cat(features, dim=1))
        return fused, (motions[0] if motions else None)

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


class MotionGrounding(nn.Module):
    """Text-conditioned motion (``temporal: flow``): how well each cell's motion fits the
    words, as a dense-prompt term.

    Each of ``heads`` heads pools the words (attention with a learned key, so a head can
    find "left" or "not moving") into a linear query over the cell's motion descriptor
    [u, v, speed, confidence] (from :func:`pixel_motion`): "moving left" can ask for u < 0,
    "not moving" for an edge without speed. The ``heads`` score maps go through 1×1 convs
    to C channels that the dense prompt adds and to a bias of the mask logits (the
    queries start at zero: an untrained model is unchanged). The bias is the short path: the
    mask loss reaches the queries directly, where through the decoder alone they did not
    learn direction within the demo budget (issue 20). It reads the text encoder's own
    (frozen) word features: after the Cross-Modal MLP of a trained demo model the word
    "left" is almost "right" (cosine 0.94; 0.77 before it), since appearance never
    needed the difference.
    """

    def __init__(self, *, dim: int, text_dim: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(text_dim)
        self.key = nn.Parameter(torch.randn(heads, text_dim) * text_dim**-0.5)
        self.value = nn.Linear(text_dim, heads * DESCRIPTOR_CHANNELS)
        self.out = nn.Conv2d(heads, dim, kernel_size=1)
        self.to_logit = nn.Conv2d(heads, 1, kernel_size=1)
        # the queries start at zero (no motion term) and the logit bias at the heads' mean:
        # the loss then reaches the queries from the first step (zero queries *and* zero
        # output weights would be a saddle point where neither gets a useful gradient)
        for layer in (self.value, self.out, self.to_logit):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.to_logit.weight, 1.0 / heads)

    def forward(
        self, motion: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """motion b×3×h×w (b = 1 or B), the text encoder's words B×L×Ct with mask B×L (True
        = a real word) → (dense-prompt term B×C×h×w, mask-logit bias B×1×h×w)."""
        words = self.norm(words)
        batch, length, dim = words.shape
        u, v, confidence = motion.unbind(dim=1)
        speed = (u.square() + v.square() + 1e-6).sqrt()
        descriptor = torch.stack([u, v, speed, confidence], dim=1).to(words)
        attention = torch.einsum("blc,kc->bkl", words, self.key) * dim**-0.5
        attention = attention.masked_fill(~mask.bool().unsqueeze(1), float("-inf")).softmax(-1)
        values = self.value(words).view(batch, length, self.heads, DESCRIPTOR_CHANNELS)
        query = torch.einsum("bkl,blkd->bkd", attention, values)
        descriptor = descriptor.expand(batch, -1, -1, -1)
        scores = torch.einsum("bkd,bdhw->bkhw", query, descriptor)
        return self.out(scores), self.to_logit(scores)


def pixel_motion(
    current: torch.Tensor, previous: torch.Tensor, *, radius: int, cell: int = PIXELS_PER_CELL
) -> torch.Tensor:
    """Block matching: b×3×H×W pixels of frames t and t-k → b×3×(H/cell)×(W/cell) motion.

    For every displacement (dx, dy) within ``radius`` the squared difference between frame
    t and frame t-k moved by it is averaged over each cell. The cost c over displacements
    is then turned into a soft choice p = softmax(-(c - min c + 0.05 · spread · |d|²) /
    (0.05 · spread + ε)), where spread = mean(c - min c) says how much the displacements
    differ in the cell (nothing inside a uniform region), and the |d|² term gives ties (a
    cell beside an edge, an edge along its own motion) to the smallest displacement. The channels are the expected
    displacement u, v (pixels, + = right / down) times the confidence
    spread / (spread + 0.05), and that confidence. Not learned; no gradient.
    """
    with torch.no_grad():
        current, previous = current.float(), previous.float()
        height, width = current.shape[-2:]
        padded = F.pad(previous, (radius, radius, radius, radius), mode="replicate")
        shifts = range(-radius, radius + 1)
        cost = torch.cat(
            [  # content at (y, x) now was at (y - v, x - u) before
                F.avg_pool2d(
                    (
                        current
                        - padded[
                            ..., radius - v : radius - v + height, radius - u : radius - u + width
                        ]
                    )
                    .pow(2)
                    .sum(dim=1, keepdim=True),
                    cell,
                )
                for v in shifts
                for u in shifts
            ],
            dim=1,
        )
        excess = cost - cost.amin(dim=1, keepdim=True)
        spread = excess.mean(dim=1, keepdim=True)
        grid = torch.tensor(list(shifts), dtype=cost.dtype, device=cost.device)
        u = grid.repeat(len(grid)).view(1, -1, 1, 1)
        v = grid.repeat_interleave(len(grid)).view(1, -1, 1, 1)
        # ties (a cell beside an edge, an edge along its motion) go to the smallest motion
        excess = excess + 0.05 * spread * (u.square() + v.square())
        choice = torch.softmax(-excess / (0.05 * spread + 1e-6), dim=1)
        u, v = (choice * u).sum(dim=1, keepdim=True), (choice * v).sum(dim=1, keepdim=True)
        confidence = spread / (spread + 0.05)
        return torch.cat([u * confidence, v * confidence, confidence], dim=1)
