"""Strict loading of official SAM checkpoints into RefSAM's SAM parts (MODEL.md part 1).

An official ``sam_vit_*.pth`` is a flat state dict with keys ``image_encoder.*``,
``prompt_encoder.*`` and ``mask_decoder.*``. Every one of them must match a SAM tensor
of the model (same name, same shape) and every SAM tensor must be in the file; the
only model tensors not in the file are RefSAM's new modules. Anything else is a
:class:`SamCheckpointError` naming the file and the mismatched keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from refsam.errors import UserError

log = logging.getLogger(__name__)

SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


class SamCheckpointError(UserError):
    """A SAM checkpoint is missing, unreadable, or does not match the requested variant."""


def _preview(keys: list[str], limit: int = 8) -> str:
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` as a flat dict of tensors, or SamCheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise SamCheckpointError(f"{path}: SAM checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input, reported with its path
        raise SamCheckpointError(
            f"{path}: not a readable weights-only torch checkpoint ({exc})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SamCheckpointError(
            f"{path}: expected a flat state dict of tensors (an official sam_vit_*.pth)"
        )
    return state


def load_sam_checkpoint(model: nn.Module, path: str | Path, new_keys: set[str]) -> None:
    """Load ``path`` strictly into ``model``'s SAM tensors (all keys but ``new_keys``)."""
    path = Path(path)
    state = read_state_dict(path)
    own = {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(SAM_PREFIXES) and k not in new_keys
    }
    foreign = sorted(k for k in state if not k.startswith(SAM_PREFIXES))
    unexpected = sorted(k for k in state if k.startswith(SAM_PREFIXES) and k not in own)
    missing = sorted(k for k in own if k not in state)
    wrong_shape = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    problems = []
    if foreign:
        problems.append(
            f"{len(foreign)} key(s) outside SAM's image_encoder/prompt_encoder/mask_decoder: {_preview(foreign)}"
        )
    if missing:
        problems.append(f"{len(missing)} SAM key(s) missing from the file: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_preview(wrong_shape, 4)}")
    if problems:
        raise SamCheckpointError(
            f"{path}: does not match this SAM variant (wrong size or not a SAM checkpoint): "
            + "; ".join(problems)
        )
    result = model.load_state_dict(state, strict=False)
    not_loaded = sorted(set(result.missing_keys) & set(own))
    if not_loaded or result.unexpected_keys:
        raise SamCheckpointError(
            f"{path}: keys not loaded: {_preview(not_loaded + result.unexpected_keys)}"
        )
    log.info("loaded %d SAM tensors from %s", len(state), path)
