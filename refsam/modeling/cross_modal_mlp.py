"""Cross-Modal MLP: text features → SAM prompt space (MODEL.md part 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossModalMLP(nn.Module):
    """…×Ct → …×C, L2-normalised: Linear Ct→Ct/2, ReLU, Linear Ct/2→Ct/2, ReLU, Linear →C.

    One MLP shared by the word features (B×L×Ct → sparse prompts B×L×C) and the
    sentence feature (B×Ct → sentence vector B×C). The unit vectors are multiplied by a
    learned scale initialised at √C, so the text tokens start with the norm of SAM's own
    prompt tokens (≈ √C) instead of 1, which a decoder would otherwise barely attend to.
    """

    def __init__(self, *, text_dim: int, prompt_dim: int) -> None:
        super().__init__()
        hidden = text_dim // 2
        self.layers = nn.Sequential(
            nn.Linear(text_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, prompt_dim),
        )
        self.scale = nn.Parameter(torch.tensor(float(prompt_dim) ** 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(x), dim=-1) * self.scale
