"""Implicit Tracking Module (MODEL.md part 7): object token + previous track token → next."""

from __future__ import annotations

import torch
from torch import nn


class ImplicitTrackingModule(nn.Module):
    """Query interaction over [previous track token, object token] (B×2×C).

    8-head self-attention + residual + LayerNorm, then FFN C→4C→C + residual + LayerNorm;
    the output at the track-token slot is the next frame's track token (B×C). A learned
    ``initial_token`` (C) starts every video. This is the only state carried across
    frames, so memory is O(1) in video length.
    """

    def __init__(self, *, dim: int, num_heads: int = 8, ffn_ratio: int = 4) -> None:
        super().__init__()
        self.initial_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.initial_token, std=0.02)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_ratio * dim), nn.ReLU(), nn.Linear(ffn_ratio * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def initial(self, batch_size: int) -> torch.Tensor:
        """The learned frame-0 track token, B×C."""
        return self.initial_token.unsqueeze(0).expand(batch_size, -1)

    def forward(self, track_token: torch.Tensor, object_token: torch.Tensor) -> torch.Tensor:
        """track_token B×C, object_token B×C → next track token B×C."""
        tokens = torch.stack([track_token, object_token], dim=1)
        tokens = self.norm1(tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0])
        tokens = self.norm2(tokens + self.ffn(tokens))
        return tokens[:, 0]
