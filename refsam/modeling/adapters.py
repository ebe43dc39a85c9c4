"""Bottleneck adapters for SAM's encoder blocks (MODEL.md part 2).

Each adapted :class:`segment_anything.modeling.image_encoder.Block` gets two adapters
(Linear D→D/4, GELU, Linear D/4→D), attached by forward hooks so that SAM's block and its
parameter names stay untouched (official checkpoints load strictly):

* ``attn``: after the attention, with a skip: ``a = attn(x); a = a + adapter(a)``;
* ``mlp``: parallel to the MLP, scaled: ``m = mlp(n) + 0.5 · adapter(n)`` with ``n = norm2(x)``.

The up-projections are zero-initialised, so an adapted encoder equals SAM exactly at
step 0. The adapters live as ``blocks.<i>.adapters.{attn,mlp}``: new keys only.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Block, ImageEncoderViT
from torch import nn


class Adapter(nn.Module):
    """Bottleneck MLP ``…×D → …×D`` (down D→D·ratio, GELU, up); up-projection zero-init."""

    def __init__(self, *, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class BlockAdapters(nn.Module):
    """The two adapters of one encoder block, applied through hooks on its attn and mlp."""

    def __init__(self, *, dim: int, ratio: float = 0.25, mlp_scale: float = 0.5) -> None:
        super().__init__()
        self.attn = Adapter(dim=dim, ratio=ratio)
        self.mlp = Adapter(dim=dim, ratio=ratio)
        self.mlp_scale = mlp_scale

    def after_attention(
        self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor
    ) -> torch.Tensor:
        """Hook on ``block.attn``: output (windows×w×w×D or B×H×W×D) + adapter(output)."""
        return output + self.attn(output)

    def beside_mlp(
        self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor
    ) -> torch.Tensor:
        """Hook on ``block.mlp``: mlp(n) + scale · adapter(n), n = the MLP's input."""
        return output + self.mlp_scale * self.mlp(inputs[0])


def attach_adapters(
    encoder: ImageEncoderViT, block_indexes: tuple[int, ...], *, ratio: float, mlp_scale: float
) -> list[BlockAdapters]:
    """Add :class:`BlockAdapters` to ``encoder.blocks[i]`` for each index; return them."""
    attached = []
    for index in block_indexes:
        block = encoder.blocks[index]
        if not isinstance(block, Block):
            raise TypeError(f"encoder block {index} is {type(block).__name__}, not SAM's Block")
        adapters = BlockAdapters(
            dim=block.norm1.normalized_shape[0], ratio=ratio, mlp_scale=mlp_scale
        )
        block.add_module("adapters", adapters)
        block.attn.register_forward_hook(adapters.after_attention)
        block.mlp.register_forward_hook(adapters.beside_mlp)
        attached.append(adapters)
    return attached
