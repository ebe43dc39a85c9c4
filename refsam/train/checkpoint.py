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

Failure modes (docs/reliability.md, "Training and checkpoints"): a write goes to
``.<name>.tmp-<pid>-<tid>``, is fsynced and renamed, so a kill never leaves a partial file under a
final name; a failed write (ENOSPC, EIO, …) removes its temporary and raises an ``OSError``
that names the final file (``torch.save`` itself would turn it into an anonymous
``RuntimeError``). Reading a checkpoint (weights-only, refusing pickled code) is
:func:`refsam.modeling.checkpoint.load_checkpoint`. ``--resume auto`` skips a step checkpoint that cannot be read (torn,
truncated, garbage: a warning names it and it is moved aside to ``<name>.corrupt``) and
resumes from the newest complete one; a file that holds pickled code or objects is refused
(:class:`UnsafeCheckpointError`), never skipped silently and never run.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from refsam import fsio
from refsam.modeling.checkpoint import (
    FORMAT,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_weights_only,
)
from refsam.paths import not_found_message

log = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step-(\d{8})\.pt$")
CORRUPT_SUFFIX = ".corrupt"
BEST = "best.pt"


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
class _Sink:
    """The file object handed to ``torch.save``: it keeps the ``OSError`` of a failed write,
    which ``torch.save`` replaces by an anonymous ``RuntimeError`` ("unexpected pos …")."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_save(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary name in the same folder, fsync, rename over ``path``.

    On any failure the temporary is removed and ``path`` keeps its previous content; a
    write, fsync or rename error is an ``OSError`` with the original errno naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(handle: IO[bytes]) -> None:
        sink = _Sink(handle)
        try:
            torch.save(payload, sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None

    fsio.atomic_write(path, write, what="writing checkpoint")
    fsio.fsync_dir(path.parent)
    return path


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries that killed writers left in ``directory``, with a warning
    naming each. Only call it while holding the run directory's lock (a live writer's
    temporary would go too)."""
    removed = fsio.remove_temporaries(directory)
    for path in removed:
        log.warning("removed %s: a temporary left by an interrupted checkpoint write", path)
    return removed


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


def check_resumable(path: Path) -> None:
    """Raise CheckpointError unless ``path`` is a complete, readable refsam checkpoint
    (UnsafeCheckpointError for pickled code). Tensors are memory-mapped, not read, so this
    costs little more than opening the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(not_found_message(path))
    try:
        payload = load_weights_only(path, map_location="cpu", mmap=True)
    except Exception:
        payload = load_checkpoint(path)  # classifies the failure (or reads a non-zip file)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a refsam training checkpoint (format {FORMAT!r})")


def resolve_resume(resume: Path | str | None, directory: Path) -> Path | None:
    """``"auto"`` → newest complete step checkpoint of ``directory`` (None: start fresh); a
    path → that file; None → None.

    ``"auto"`` skips a step checkpoint that cannot be read (torn, truncated, garbage, not a
    refsam checkpoint) with a warning naming it, moves it aside to ``<name>.corrupt`` and
    tries the previous one. A file refused as unsafe (pickled code) stops the resume
    (UnsafeCheckpointError): it is evidence of tampering, not of a crash. An explicit path
    must be a complete training checkpoint (CheckpointError otherwise)."""
    if resume is None:
        return None
    if str(resume) != "auto":
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError("--resume " + not_found_message(path))
        check_resumable(path)
        return path
    for found in reversed(list_step_checkpoints(directory)):
        try:
            check_resumable(found)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as exc:
            aside = found.with_name(found.name + CORRUPT_SUFFIX)
            log.warning("--resume auto: skipping %s (moved to %s)", exc, aside.name)
            try:
                os.replace(found, aside)
            except OSError as err:
                log.warning("could not move %s aside: %s", found, err)
            continue
        return found
    log.info("--resume auto: no complete checkpoint in %s, starting fresh", directory)
    return None
