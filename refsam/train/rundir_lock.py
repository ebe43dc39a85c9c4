"""One training per run directory: ``<train.output_dir>/<train.run_name>/.lock``.

The lock is :func:`refsam.data.lock.output_lock` (a kernel record lock on a file holding
the owner's pid and host), so a second training into the same run directory fails at once
with :class:`~refsam.errors.LockError` naming the lock file and the owner's pid (CLI exit
2), and the lock of a killed run (SIGKILL included) is taken over by the next one. It is
re-entrant within a process: ``refsam train`` takes it before it starts or continues an
MLflow run (so a refused second run never touches the first one's MLflow run), and
:func:`~refsam.train.runner.train` takes it again for library callers. Under ``torchrun``
only rank 0 takes it (the other ranks share rank 0's run directory).

While the lock is held, nothing else writes checkpoints there, so the temporaries that a
killed writer left behind are removed (each with a warning naming it).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from refsam.data.lock import output_lock
from refsam.paths import run_dir
from refsam.train.checkpoint import remove_temporaries

F = TypeVar("F", bound=Callable[..., Any])


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def run_dir_lock(cfg: Any) -> Iterator[Path | None]:
    """Hold the run directory's lock for the block (rank 0; None for other ranks and for a
    config without stages, which writes nothing)."""
    if not _is_rank_zero() or not cfg.train.stages:
        yield None
        return
    directory = run_dir(cfg)
    with output_lock(directory) as path:
        remove_temporaries(directory / "checkpoints")
        yield path


def holds_run_dir_lock(fn: F) -> F:
    """Decorate ``train(cfg, …)``: run it holding ``cfg``'s run directory lock (not for
    dry runs or a config without stages, which write nothing)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dry_run"):
            return fn(*args, **kwargs)
        cfg = args[0] if args else kwargs["cfg"]
        with run_dir_lock(cfg):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
