"""Peak accelerator memory of one training step per GPU, computed for a config without
loading weights or computing anything: the model is built on PyTorch's ``meta`` device and
one forward pass of a stage's per-GPU batch records the tensors autograd saves for the
backward pass (storages counted once; on real tensors the same count matches byte for
byte, see tests/train/test_memory.py).

peak ≈ weights (RefSAM + text encoder) + gradients and AdamW's two moments of the trained
parameters + saved activations (+ one encoder block recomputed at a time when
``train.activation_checkpointing`` is on). Activations are counted in fp32: under bf16/fp16
autocast most are stored in 16 bits, so the estimate is an upper bound there. Each clip
carries one expression (more share the clip's encoder pass and add little).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from refsam.config import RefSAMConfig, StageConfig
from refsam.modeling.build import meta_refsam, switches
from refsam.modeling.features import TextFeatures
from refsam.modeling.refsam import RefSAM
from refsam.modeling.text_encoder import resolve_text_encoder

GB = 1e9
TOKENS = 20  # a typical referring expression's token count
METHOD = "computed on the meta device (shapes only), activations in fp32"


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one training step of ``stage`` on one accelerator (GB)."""

    stage: str
    frames: int  # image-encoder frames per GPU and step
    weights_gb: float
    training_state_gb: float  # gradients + AdamW moments of the trained parameters
    activations_gb: float
    peak_gb: float
    method: str = METHOD


def estimate_training_memory(cfg: RefSAMConfig) -> list[MemoryEstimate]:
    """One estimate per stage of ``cfg.train.stages`` (ConfigError for a bad text encoder)."""
    text_params, text_width = text_encoder_size(cfg.model.text_encoder)
    model = meta_refsam(
        cfg.model.variant,
        text_width=cfg.model.text_width or text_width,
        **switches(cfg.model),
        **cfg.model.overrides,
    )
    model.train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) + text_params * 4
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state = 3 * trained  # gradient + AdamW exp_avg + exp_avg_sq
    estimates = []
    for stage in cfg.train.stages:
        saved = _saved_activation_bytes(model, stage, cfg.train.activation_checkpointing)
        if cfg.train.activation_checkpointing:
            full = _saved_activation_bytes(model, stage, checkpointing=False)
            saved += (full - saved) / len(model.image_encoder.blocks)  # one block recomputed
        estimates.append(
            MemoryEstimate(
                stage=stage.name,
                frames=stage.batch_size * stage.frames_per_clip,
                weights_gb=weights / GB,
                training_state_gb=state / GB,
                activations_gb=saved / GB,
                peak_gb=(weights + state + saved) / GB,
            )
        )
    return estimates


def _saved_activation_bytes(model: RefSAM, stage: StageConfig, checkpointing: bool) -> float:
    """Bytes of the storages autograd saves in one forward of a stage's per-GPU batch."""
    return saved_activation_bytes(
        model, stage.batch_size, stage.frames_per_clip, checkpointing=checkpointing
    )


def saved_activation_bytes(
    model: RefSAM, clips: int, steps: int, *, checkpointing: bool, device: str = "meta"
) -> float:
    """Bytes of the storages autograd saves in one forward of ``clips`` clips of ``steps``
    frames (zeros; one expression each) on ``device`` (``meta``: nothing is computed)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
        return tensor

    size, width = model.img_size, model.text_width
    frames = torch.zeros(clips, steps, 3, size, size, dtype=torch.uint8, device=device)
    text = TextFeatures(
        words=torch.zeros(clips, TOKENS, width, device=device),
        sentence=torch.zeros(clips, width, device=device),
        mask=torch.ones(clips, TOKENS, dtype=torch.bool, device=device),
    )
    before = model.share_repeated_frames, model.activation_checkpointing
    model.share_repeated_frames, model.activation_checkpointing = False, checkpointing
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.forward_clip(frames, text)
    finally:
        model.share_repeated_frames, model.activation_checkpointing = before
    return float(sum(storages.values()))


def text_encoder_size(name: str | None) -> tuple[int, int]:
    """(parameters, width) of a text encoder from its folder's config.json, built on meta."""
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    from refsam.modeling.text_encoder import T5_TYPES

    _, path = resolve_text_encoder(name)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model_class = T5EncoderModel if config.model_type in T5_TYPES else AutoModel
    with torch.device("meta"):
        encoder = (
            T5EncoderModel(config)
            if model_class is T5EncoderModel
            else AutoModel.from_config(config)
        )
    width = int(getattr(config, "d_model", None) or config.hidden_size)
    return sum(p.numel() for p in encoder.parameters()), width


def memory_report(cfg: RefSAMConfig) -> list[str]:
    """The dry run's lines: each stage's estimate, and a WARNING line for each stage over
    ``train.device_memory_gb``."""
    checkpointing = "on" if cfg.train.activation_checkpointing else "off"
    lines = []
    for estimate in estimate_training_memory(cfg):
        lines.append(
            f"stage {estimate.stage}: estimated peak memory {estimate.peak_gb:.1f} GB per GPU "
            f"(weights {estimate.weights_gb:.1f} + gradients and AdamW "
            f"{estimate.training_state_gb:.2f} + activations {estimate.activations_gb:.1f} for "
            f"{estimate.frames} frames, activation checkpointing {checkpointing}; "
            f"{estimate.method})"
        )
        limit = cfg.train.device_memory_gb
        if limit is not None and estimate.peak_gb > limit:
            lines.append(
                f"WARNING: stage {estimate.stage} needs about {estimate.peak_gb:.1f} GB per GPU, "
                f"more than train.device_memory_gb={limit:g}: turn on "
                "train.activation_checkpointing or lower the stage's batch_size / frames_per_clip"
            )
    return lines
