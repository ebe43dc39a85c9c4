"""Variant registry: the sizes of each RefSAM variant (MODEL.md "Variants").

``vit_b``/``vit_l``/``vit_h`` are SAM's own sizes (``segment_anything.build_sam``) so their
official checkpoints load strictly; ``tiny`` is a CPU-sized SAM for demos and tests with
three global-attention blocks, so the hierarchical dense attention has two intermediate
levels. Any field can be overridden by name (``img_size=512``); unknown names are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from refsam.errors import ConfigError


@dataclass(frozen=True)
class VariantSpec:
    """Sizes of one variant. ``prompt_dim`` is SAM's C (256 for the official models)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    tracking_heads: int = 8
    adapter_ratio: float = 0.25
    adapter_mlp_scale: float = 0.5

    @property
    def embedding_size(self) -> int:
        """Side of SAM's image-embedding grid (64 for a 1024-px input)."""
        return self.img_size // self.patch_size

    @property
    def intermediate_blocks(self) -> tuple[int, ...]:
        """Blocks whose outputs feed the hierarchical dense attention: global ones but the last."""
        return tuple(sorted(self.global_attn_indexes))[:-1]

    @property
    def adapter_blocks(self) -> tuple[int, ...]:
        """Blocks that get adapters: the second half of the encoder (the authors' setting)."""
        return tuple(range(self.depth // 2, self.depth))

    def validate(self) -> VariantSpec:
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"model.overrides: img_size {self.img_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if not self.global_attn_indexes or max(self.global_attn_indexes) >= self.depth:
            raise ConfigError(
                f"model.overrides: global_attn_indexes {self.global_attn_indexes} must be "
                f"non-empty block indexes below depth {self.depth}"
            )
        if self.prompt_dim % self.tracking_heads:
            raise ConfigError(
                f"model.overrides: prompt_dim {self.prompt_dim} is not divisible by "
                f"tracking_heads {self.tracking_heads}"
            )
        return self


VARIANTS: dict[str, VariantSpec] = {
    "tiny": VariantSpec(
        img_size=128,
        patch_size=8,
        embed_dim=96,
        depth=6,
        num_heads=4,
        global_attn_indexes=(1, 3, 5),
        window_size=4,
        prompt_dim=64,
        decoder_depth=2,
        decoder_mlp_dim=256,
        decoder_heads=4,
        iou_head_hidden_dim=64,
    ),
    "vit_b": VariantSpec(
        img_size=1024,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        global_attn_indexes=(2, 5, 8, 11),
        window_size=14,
        prompt_dim=256,
    ),
    "vit_l": VariantSpec(
        img_size=1024,
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        global_attn_indexes=(5, 11, 17, 23),
        window_size=14,
        prompt_dim=256,
    ),
    "vit_h": VariantSpec(
        img_size=1024,
        patch_size=16,
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
        window_size=14,
        prompt_dim=256,
    ),
}


def get_variant(name: str, **overrides: Any) -> VariantSpec:
    """The spec of variant ``name`` with ``overrides`` applied (ConfigError if unknown)."""
    if name not in VARIANTS:
        raise ConfigError(
            f"model.variant: unknown variant {name!r}; expected one of {', '.join(VARIANTS)}"
        )
    fields = {f.name for f in dataclasses.fields(VariantSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"model.overrides: unknown size field(s) {', '.join(unknown)}; expected among {', '.join(sorted(fields))}"
        )
    if "global_attn_indexes" in overrides:
        overrides["global_attn_indexes"] = tuple(overrides["global_attn_indexes"])
    return dataclasses.replace(VARIANTS[name], **overrides).validate()
