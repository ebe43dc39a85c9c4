"""How frames go through SAM's image encoder: block by block, keeping the levels the
hierarchical dense attention reads, with optional activation checkpointing, and once per
distinct frame of a clip.

Activation checkpointing (``train.activation_checkpointing``) keeps only each block's input
during the forward pass and recomputes the block in the backward pass: the adapted ViT
blocks' activations (≈3 GB per 1024-px frame at vit_b in fp32) shrink to one B×h×w×C tensor
per block, for about one more encoder forward per step. It applies only where autograd
records the block (training with gradients); evaluation runs the blocks as they are.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_blocks(
    encoder: ImageEncoderViT,
    x: torch.Tensor,
    levels: tuple[int, ...],
    *,
    checkpointing: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Patch tokens B×h×w×C (after the positional embedding) → (last block's output,
    the outputs of the blocks in ``levels``)."""
    intermediates = []
    for index, block in enumerate(encoder.blocks):
        x = _run_block(block, x, checkpointing)
        if index in levels:
            intermediates.append(x)
    return x, intermediates


def _run_block(block: nn.Module, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    records_graph = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in block.parameters())
    )
    if checkpointing and records_graph:
        return checkpoint(block, x, use_reentrant=False)
    return block(x)


def repeated_frames(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips G×T×… → (``keep`` G·T bool: frames that differ from the previous frame of their
    clip, ``source`` G·T int64: the row, among the kept frames, that holds each frame)."""
    clips = frames.shape[0]
    same = (frames[:, 1:] == frames[:, :-1]).flatten(2).all(dim=2)
    first = torch.ones(clips, 1, dtype=torch.bool, device=frames.device)
    keep = torch.cat([first, ~same], dim=1).flatten()
    return keep, keep.long().cumsum(0) - 1
