"""Model building and what a training checkpoint names and holds (its model tensors, base
SAM file, data manifests). Reading a checkpoint back into a model is
:func:`refsam.modeling.checkpoint.model_from_checkpoint`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from refsam.config import RefSAMConfig
from refsam.data.index import manifest_hash
from refsam.fsio import file_sha256
from refsam.modeling import RefSAM, build_refsam_from_config
from refsam.modeling.checkpoint import FORMAT
from refsam.paths import has_manifest, split_dir

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shard_dir(cfg: RefSAMConfig, dataset: str, split: str) -> Path:
    return split_dir(cfg.data.shards_root, dataset, split)


def data_manifests(cfg: RefSAMConfig) -> dict[str, str]:
    """``{"<dataset>/<split>": manifest sha256}`` of every training and evaluation split."""
    splits = [d for stage in cfg.train.stages for d in stage.datasets] + list(cfg.eval.sets)
    out: dict[str, str] = {}
    for split in splits:
        directory = shard_dir(cfg, split.dataset, split.split)
        if has_manifest(directory):
            out[split.tag] = manifest_hash(directory)
    return out


def sam_reference(cfg: RefSAMConfig) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of the base SAM checkpoint, None without one."""
    path = cfg.model.sam_checkpoint
    if path is None:
        return None
    return {"path": str(path), "sha256": file_sha256(Path(path))}


def build_model(cfg: RefSAMConfig) -> RefSAM:
    """The model of ``cfg.model`` on the CPU (SAM checkpoint loaded strictly when named),
    with ``cfg.train.activation_checkpointing`` applied."""
    model = build_refsam_from_config(cfg.model)
    model.activation_checkpointing = cfg.train.activation_checkpointing
    return model


def model_state(model: RefSAM, *, full: bool) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds: trained parts (default) or the whole state dict."""
    state = model.state_dict() if full else model.trainable_state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_model_checkpoint(
    model: RefSAM, cfg: RefSAMConfig, path: Path, *, run_id: str | None = None
) -> Path:
    """A weights-only checkpoint of ``model`` (no optimiser state) that
    :func:`model_from_checkpoint` and ``refsam evaluate/predict`` read (e.g. an untrained
    baseline, or a model exported from a notebook)."""
    from refsam.train.checkpoint import atomic_save

    payload = {
        "format": FORMAT,
        "model": model_state(model, full=cfg.train.save_full_model),
        "model_scope": "full" if cfg.train.save_full_model else "trainable",
        "progress": {"stage": 0, "stage_name": "", "stage_step": 0, "step": 0, "positions": []},
        "config_yaml": cfg.to_yaml(),
        "config_hash": cfg.config_hash(),
        "sam_checkpoint": sam_reference(cfg),
        "text_encoder": model.text_encoder.identifier if model.text_encoder else None,
        "data_manifests": data_manifests(cfg),
        "run_id": run_id,
        "metrics": {},
    }
    return atomic_save(payload, Path(path))
