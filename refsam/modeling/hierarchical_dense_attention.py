"""Dense prompt from vision–language attention, per level and hierarchical (MODEL.md part 5).

Shapes: F B×C×h×w (image embedding, or one projected encoder level), T B×N×C text tokens
``[words; sentence]`` with a B×N key mask (True = real token). An image batch of 1 is
broadcast against a text batch of N (one frame, many expressions).
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class DenseAttention(nn.Module):
    """One level: per grid position softmax(F·Tᵀ/√C) over real tokens, times T → language
    feature B×C×h×w; concat with F → 1×1 conv → B×C×h×w."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(2 * dim, dim, kernel_size=1)

    def forward(
        self, feature: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        channels, height, width = feature.shape[1:]
        batch = text.shape[0]
        queries = feature.flatten(2).transpose(1, 2)  # b×hw×C
        logits = queries @ text.transpose(1, 2) / math.sqrt(channels)  # B×hw×N
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        language = (logits.softmax(dim=-1) @ text).transpose(1, 2)
        language = language.reshape(batch, channels, height, width)
        feature = feature.expand(batch, -1, -1, -1)
        return self.fuse(torch.cat([feature, language], dim=1))


class HierarchicalDenseAttention(nn.Module):
    """Encoder levels + final embedding → dense prompt embedding B×C×h×w.

    Each intermediate level (b×h×w×D, an encoder block's output) is projected to C
    (1×1 conv + LayerNorm2d), dense attention runs per level (intermediates and the final
    embedding), and the levels are fused (concat → 1×1 conv).
    """

    def __init__(self, *, encoder_dim: int, dim: int, num_intermediate: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(encoder_dim, dim, kernel_size=1, bias=False), LayerNorm2d(dim))
            for _ in range(num_intermediate)
        )
        self.levels = nn.ModuleList(DenseAttention(dim=dim) for _ in range(num_intermediate + 1))
        self.fuse = nn.Conv2d((num_intermediate + 1) * dim, dim, kernel_size=1)

    def forward(
        self,
        final: torch.Tensor,
        intermediates: list[torch.Tensor],
        text: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """final b×C×h×w, intermediates [b×h×w×D], text B×N×C, mask B×N → B×C×h×w."""
        if len(intermediates) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} levels, got {len(intermediates)}")
        features = [
            proj(x.permute(0, 3, 1, 2))
            for proj, x in zip(self.projections, intermediates, strict=True)
        ]
        features.append(final)
        levels = [level(f, text, mask) for level, f in zip(self.levels, features, strict=True)]
        return self.fuse(torch.cat(levels, dim=1))
