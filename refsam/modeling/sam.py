"""SAM at a variant's size, built from the installed ``segment_anything`` classes unmodified.

:func:`build_sam` is SAM's own ``_build_sam`` with the sizes taken from a
:class:`~refsam.modeling.variants.VariantSpec` (so the tiny variant and non-1024 inputs
use the same classes). RefSAM takes the three parts of this model; tests and the
benchmark use the whole vanilla model as the reference.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from refsam.modeling.preprocess import PIXEL_MEAN, PIXEL_STD
from refsam.modeling.variants import VariantSpec


def build_image_encoder(spec: VariantSpec) -> ImageEncoderViT:
    """SAM's ViT encoder: B×3×S×S normalised → B×C×(S/patch)×(S/patch)."""
    return ImageEncoderViT(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.prompt_dim,
    )


def build_prompt_encoder(spec: VariantSpec) -> PromptEncoder:
    grid = spec.embedding_size
    return PromptEncoder(
        embed_dim=spec.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(spec.img_size, spec.img_size),
        mask_in_chans=16,
    )


def decoder_kwargs(spec: VariantSpec) -> dict:
    """Constructor arguments of SAM's MaskDecoder at this size (shared with our subclass)."""
    return {
        "num_multimask_outputs": 3,
        "transformer": TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.prompt_dim,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_heads,
        ),
        "transformer_dim": spec.prompt_dim,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": spec.iou_head_hidden_dim,
    }


def build_sam(spec: VariantSpec) -> Sam:
    """A vanilla ``segment_anything`` Sam at ``spec``'s size (random init, eval mode)."""
    sam = Sam(
        image_encoder=build_image_encoder(spec),
        prompt_encoder=build_prompt_encoder(spec),
        mask_decoder=MaskDecoder(**decoder_kwargs(spec)),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()
