"""Training checkpoints: atomic save, keep-last-N + best, weights-only load, RNG capture.

A checkpoint is a plain dict of tensors and primitives (so ``torch.load(...,
weights_only=True)`` reads it and a checkpoint can never run code):

- ``format``: :data:`FORMAT`; ``model``: the trained tensors (``trainable_state_dict``)
  or the full ``state_dict`` (``model_scope`` says which);
- ``optimizer``, ``scheduler`` (``{"step": n}``), ``scaler`` (GradScaler state or ``{}``);
- ``progress``: stage index/name, global step, stage step, epoch and batches consumed in
  that epoch (the loader position), finished flag;
- ``rng``: torch (CPU and CUDA) as uint8 tensors, numpy and python as int lists;
- ``config_yaml`` (the resolved config), ``sam_checkpoint`` (``{"path", "sha256"}`` or
  None), ``text_encoder`` (id), ``data_manifests`` (``{"<dataset>/<split>": sha256}``),
  ``run_id`` (MLflow, or None), ``metrics`` (last evaluation, floats).

Files: ``<run>/checkpoints/step-00000123.pt`` (the last ``keep_last`` kept) and
``best.pt`` (best selection metric so far).
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refsam.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "refsam-checkpoint/1"
STEP_PATTERN = re.compile(r"^step-(\d{8})\.pt$")
BEST = "best.pt"


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or not a refsam training checkpoint."""


# ----------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA), numpy and python as tensors / int lists."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


# ----------------------------------------------------------------------------- files
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary name in the same folder, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any unreadable file is bad input, reported with its path
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a refsam training checkpoint (expected format {FORMAT!r}; "
            "an official SAM file goes in model.sam_checkpoint)"
        )
    return payload


def step_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def list_step_checkpoints(directory: Path) -> list[Path]:
    """Step checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if STEP_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest step checkpoint in ``directory`` (None when there is none)."""
    found = list_step_checkpoints(directory)
    return found[-1] if found else None


class CheckpointManager:
    """Writes step checkpoints, keeps the last ``keep_last``, and ``best.pt``."""

    def __init__(self, directory: Path, *, keep_last: int) -> None:
        self.directory = Path(directory)
        self.keep_last = max(1, keep_last)

    def save(self, payload: dict[str, Any], step: int) -> Path:
        path = atomic_save(payload, step_path(self.directory, step))
        for old in list_step_checkpoints(self.directory)[: -self.keep_last]:
            old.unlink(missing_ok=True)
            log.debug("removed old checkpoint %s", old)
        log.info("checkpoint %s", path)
        return path

    def save_best(self, payload: dict[str, Any]) -> Path:
        path = atomic_save(payload, self.directory / BEST)
        log.info("best checkpoint %s", path)
        return path

    @property
    def best_path(self) -> Path | None:
        path = self.directory / BEST
        return path if path.is_file() else None


def resolve_resume(resume: Path | str | None, directory: Path) -> Path | None:
    """``"auto"`` → newest step checkpoint of ``directory`` (None: start fresh); a path →
    that file (CheckpointError when missing); None → None."""
    if resume is None:
        return None
    if str(resume) == "auto":
        found = latest_checkpoint(directory)
        if found is None:
            log.info("--resume auto: no checkpoint in %s, starting fresh", directory)
        return found
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: checkpoint not found")
    return path
