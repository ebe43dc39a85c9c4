"""Checkpoint files → model: official SAM checkpoints and refsam training checkpoints.

**SAM checkpoints** are loaded strictly into RefSAM's SAM parts (MODEL.md part 1).

An official ``sam_vit_*.pth`` is a flat state dict with keys ``image_encoder.*``,
``prompt_encoder.*`` and ``mask_decoder.*``. Every one of them must match a SAM tensor
of the model (same name, same shape) and every SAM tensor must be in the file; the
only model tensors not in the file are RefSAM's new modules. Anything else is a
:class:`SamCheckpointError` naming the file and the mismatched keys.

**Training checkpoints** (written by :mod:`refsam.train.checkpoint`, format :data:`FORMAT`)
are read with ``weights_only=True`` (:func:`load_checkpoint`: a file holding pickled code is
refused, :class:`UnsafeCheckpointError`, never run) and rebuilt into their model by
:func:`model_from_checkpoint`: the resolved config they store, the base SAM file they name
(path + sha256, checked when the trained parts only were saved) and the text encoder id;
then the trained tensors are loaded strictly.
"""

from __future__ import annotations

import logging
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from refsam.config import RefSAMConfig, config_from_dict
from refsam.errors import ConfigError, UserError
from refsam.fsio import file_sha256
from refsam.modeling.device import resolve_device
from refsam.paths import not_found_message

if TYPE_CHECKING:
    from refsam.modeling.refsam import RefSAM

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


# ----------------------------------------------------------------------------- training checkpoints
FORMAT = "refsam-checkpoint/1"
# globals a refsam checkpoint's pickle may name (tensor rebuilding); anything else is suspect
_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "numpy.")
_MAX_PICKLE_BYTES = 64 << 20  # a bigger data.pkl is not disassembled for the message


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or not a refsam training checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds pickled code or objects that a weights-only load refuses."""


def _reason(exc: BaseException) -> str:
    """One short line out of torch's multi-line load errors, keeping the underlying error's
    type and code (torch's bare ``KeyError: 101`` is a pickle memo lookup that fails: the
    bytes are not a pickle)."""
    inner = exc.__context__ if isinstance(exc, pickle.UnpicklingError) else None
    error = inner or exc
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], int):
        return (
            f"KeyError {error.args[0]}: the pickle reads memo entry {error.args[0]}, never "
            "stored; the bytes are not a torch file"
        )
    text = str(error)
    line = next((part.strip() for part in text.splitlines() if part.strip()), text)
    line = line.split(". Please")[0].split(". This is an internal")[0]
    line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line if len(line) <= 200 else line[:199] + "…"


def _pickled_globals(path: Path) -> list[str]:
    """The globals (``module.name``) the pickles of a torch zip file would import, found by
    disassembling them (``pickletools``: nothing is built or run). Best effort: [] when the
    file cannot be parsed."""
    names: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".pkl") or member.file_size > _MAX_PICKLE_BYTES:
                    continue
                strings: list[str] = []
                for op, arg, _pos in pickletools.genops(archive.read(member)):
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # a disassembler error only means we cannot name them
        pass
    return names


def _unsafe_reason(path: Path, exc: BaseException) -> str | None:
    """Why a file the weights-only unpickler refused holds code or objects (None: it is
    torn or garbage instead). A refused global, or any unpickling failure inside a
    complete torch zip file (e.g. a pickle protocol torch never writes, hiding a global)."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    refused_global = any("GLOBAL" in str(e) for e in (exc, exc.__context__) if e is not None)
    if not refused_global and not zipfile.is_zipfile(path):
        return None
    suspects = [n for n in _pickled_globals(path) if not n.startswith(_SAFE_GLOBALS)]
    if suspects:
        return f"it imports {', '.join(sorted(set(suspects))[:4])}"
    return _reason(exc)


def load_weights_only(path: Path, **kwargs: Any) -> Any:
    """``torch.load(weights_only=True)`` without torch's pickle-protocol warning (an error
    message of ours follows when it matters; the CLI's errors stay one line)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, weights_only=True, **kwargs)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(not_found_message(path))
    try:
        payload = load_weights_only(path, map_location=map_location)
    except Exception as exc:  # any unreadable file is bad input, reported with its path
        unsafe = _unsafe_reason(path, exc)
        if unsafe is not None:
            raise UnsafeCheckpointError(
                f"{path}: refused by the weights-only loader, it holds pickled code or "
                f"objects that are not tensors ({unsafe}); nothing in it was run"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({_reason(exc)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a refsam training checkpoint (expected format {FORMAT!r}; "
            "an official SAM file goes in model.sam_checkpoint)"
        )
    return payload


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
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[RefSAM, RefSAMConfig]:
    """Rebuild the model a training checkpoint names (config, SAM file, text encoder), load
    its trained tensors (or full state), and return it in eval mode on ``device``."""
    path = Path(path)
    payload = load_checkpoint(path)
    cfg = config_of(payload, path)
    check_sam_reference(payload, cfg, path)
    model_cfg = cfg.model
    if payload.get("model_scope") == "full" and model_cfg.sam_checkpoint is not None:
        model_cfg = model_cfg.model_copy(update={"sam_checkpoint": None})
    from refsam.modeling.build import build_refsam_from_config  # build imports this module

    model = build_refsam_from_config(model_cfg)
    if payload.get("model_scope") == "full":
        model.sam_checkpoint = cfg.model.sam_checkpoint and str(cfg.model.sam_checkpoint)
    load_model_state(model, payload, path)
    target = resolve_device(str(device)) if isinstance(device, str) else device
    return model.to(target).eval(), cfg
