"""A pid lock file on an output root (ARCHITECTURE.md "Shared contracts").

The lock holds the owner's pid and host; a lock whose pid is no longer alive (on this
host) is taken over. A live owner → :class:`~refsam.errors.LockError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from refsam.errors import LockError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(root: Path) -> Iterator[Path]:
    """Hold ``root/.lock`` for the duration of the block (re-entrant for the same pid)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                owner = {}
            pid = int(owner.get("pid", -1)) if isinstance(owner, dict) else -1
            if pid == me["pid"] and owner.get("host") == me["host"]:
                yield path  # re-entrant: the caller already holds it
                return
            if owner.get("host", me["host"]) == me["host"] and (pid <= 0 or not _alive(pid)):
                log.warning("taking over the lock %s of dead process %s", path, pid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise LockError(
                f"{root} is locked by process {pid} on {owner.get('host')} ({path}); "
                "wait for it or remove the lock if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return
    raise LockError(f"could not take the lock {path}")
