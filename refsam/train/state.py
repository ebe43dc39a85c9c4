"""Model building and the model side of checkpoints (what a checkpoint names and holds).

A checkpoint rebuilds its model from the resolved config it stores, the base SAM file it
names (path + sha256, checked when the trained parts only were saved) and the text
encoder id; then the trained tensors are loaded strictly.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from refsam.config import RefSAMConfig, config_from_dict
from refsam.data.index import manifest_hash
from refsam.errors import ConfigError
from refsam.fsio import file_sha256
from refsam.modeling import RefSAM, build_refsam_from_config
from refsam.modeling.device import resolve_device
from refsam.paths import has_manifest, split_dir
from refsam.train.checkpoint import CheckpointError, load_checkpoint

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


def load_model_state(model: RefSAM, payload: dict[str, Any], source: Path) -> None:
    """Load a checkpoint's ``model`` tensors into ``model`` (strict on keys); anything but
    a dict of named tensors is a CheckpointError naming ``source``."""
    state = payload.get("model")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{source}: its 'model' entry is not a dict of named tensors")
    try:
        if payload.get("model_scope") == "full":
            model.load_state_dict(state, strict=True)
        else:
            model.load_trainable_state_dict(state)
    except (RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def config_of(payload: dict[str, Any], source: Path) -> RefSAMConfig:
    """The resolved config stored in a checkpoint."""
    try:
        data = yaml.safe_load(payload["config_yaml"])
    except (KeyError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{source}: no readable config in the checkpoint ({exc})") from None
    return config_from_dict(data, f"{source} (stored config)")


def check_sam_reference(payload: dict[str, Any], cfg: RefSAMConfig, source: Path) -> None:
    """When only trained parts were saved, the named SAM file must exist and match."""
    reference = payload.get("sam_checkpoint")
    if reference is None or payload.get("model_scope") == "full":
        return
    path = Path(reference["path"])
    if not path.is_file():
        raise CheckpointError(
            f"{source}: needs its base SAM checkpoint {path} (not found); put the file there "
            "or pass a checkpoint saved with train.save_full_model=true"
        )
    digest = file_sha256(path)
    if digest != reference["sha256"]:
        raise CheckpointError(
            f"{source}: base SAM checkpoint {path} has sha256 {digest[:12]}…, the checkpoint "
            f"was trained on {reference['sha256'][:12]}…"
        )


def model_from_checkpoint(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[RefSAM, RefSAMConfig]:
    """Rebuild and load the model of a training checkpoint (eval mode, on ``device``)."""
    payload = load_checkpoint(path)
    cfg = config_of(payload, path)
    check_sam_reference(payload, cfg, path)
    model_cfg = cfg.model
    if payload.get("model_scope") == "full" and model_cfg.sam_checkpoint is not None:
        model_cfg = model_cfg.model_copy(update={"sam_checkpoint": None})
    model = build_refsam_from_config(model_cfg)
    if payload.get("model_scope") == "full":
        model.sam_checkpoint = cfg.model.sam_checkpoint and str(cfg.model.sam_checkpoint)
    load_model_state(model, payload, path)
    return model.to(resolve_device(device)).eval(), cfg


def save_model_checkpoint(
    model: RefSAM, cfg: RefSAMConfig, path: Path, *, run_id: str | None = None
) -> Path:
    """A weights-only checkpoint of ``model`` (no optimiser state) that
    :func:`model_from_checkpoint` and ``refsam evaluate/predict`` read (e.g. an untrained
    baseline, or a model exported from a notebook)."""
    from refsam.train.checkpoint import FORMAT, atomic_save

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
