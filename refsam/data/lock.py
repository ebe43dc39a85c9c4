"""A pid lock file on an output root (ARCHITECTURE.md "Shared contracts").

``root/.lock`` holds the owner's pid and host (for the error message). Mutual exclusion is
a kernel record lock (``fcntl.lockf``) on that file: the kernel releases it when its owner
dies however it dies (SIGKILL included), so a lock whose owner is dead is simply taken
over, and two processes racing to take over a stale lock cannot both win (as they could
with a pid check followed by an unlink). A record lock is not inherited by forked children, so orphaned
worker processes of a killed run never keep the root locked. The pid in the file is still
honoured: a file naming another *live* process on this host is refused too.
A live owner → :class:`~refsam.errors.LockError` naming its pid.

On an object store (``s3://…`` roots) there are no record locks. There ``<root>/.lock`` is
created with a conditional write that fails when the key exists (S3 ``If-None-Match: *``),
so of two ingests racing for one output prefix exactly one wins; the other is refused with
the owner's host, pid and start time. The holder deletes it when done. A lock left by a
killed ingest is taken over when its owner ran on this host and is dead; from another host
it cannot be told from a live one, so the error says how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from refsam.errors import LockError, UserError
from refsam.storage import AnyPath, create_exclusive, ensure_dir, is_remote

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
_ATTEMPTS = 20
_HELD: dict[str, int] = {}  # lock path → fd held by this process (re-entrancy)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(fd: int) -> dict[str, Any]:
    """The JSON record of the lock file open as ``fd`` (empty when unreadable)."""
    try:
        data = os.pread(fd, 4096, 0)
        owner = json.loads(data.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _refuse(root: AnyPath, path: AnyPath, owner: dict[str, Any]) -> LockError:
    since = owner.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since))}" if since else ""
    return LockError(
        f"{root} is locked by process {owner.get('pid', '?')} on {owner.get('host', '?')}"
        f"{when} ({path}); wait for it or remove the lock if that process is gone"
    )


@contextlib.contextmanager
def _object_store_lock(root: AnyPath) -> Iterator[AnyPath]:
    """The object-store form of :func:`output_lock` (module docstring)."""
    ensure_dir(root)
    path = root / LOCK_NAME
    key = str(path)
    if key in _HELD:
        yield path
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time())}
    for _attempt in range(2):
        if create_exclusive(path, json.dumps(me).encode()):
            break
        try:
            owner = json.loads(path.read_bytes() or b"{}")
        except FileNotFoundError:
            continue  # released between our write and our read: try again
        except (OSError, ValueError):
            owner = {}
        pid = owner.get("pid") if isinstance(owner, dict) else None
        if not (isinstance(pid, int) and owner.get("host") == me["host"] and not _alive(pid)):
            raise _refuse(root, path, owner if isinstance(owner, dict) else {})
        log.warning("taking over the lock %s of dead process %s", path, pid)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise LockError(f"could not take the lock {path} (it keeps changing); retry")
    _HELD[key] = -1
    try:
        yield path
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def output_lock(root: AnyPath) -> Iterator[AnyPath]:
    """Hold ``root/.lock`` for the duration of the block (re-entrant within a process)."""
    if is_remote(root):
        with _object_store_lock(root) as path:
            yield path
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise UserError(f"{root}: cannot create the output folder ({exc.strerror})") from None
    path = root / LOCK_NAME
    key = os.path.realpath(path)
    if key in _HELD:
        yield path  # re-entrant: this process already holds it
        return
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _attempt in range(_ATTEMPTS):
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _owner(fd)
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise _refuse(root, path, owner) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner unlinked it between our open and lock: retry
            os.close(fd)
            continue
        owner = _owner(fd)
        pid = owner.get("pid")
        if isinstance(pid, int) and pid != me["pid"] and owner.get("host") == me["host"]:
            if _alive(pid):
                os.close(fd)
                raise _refuse(root, path, owner)
            log.warning("taking over the lock %s of dead process %s", path, pid)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _HELD[key] = fd
        try:
            yield path
        finally:
            _HELD.pop(key, None)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # unlink before unlocking: a waiter re-checks the inode
            os.close(fd)
        return
    raise LockError(f"could not take the lock {path} (it keeps changing); retry")
