"""File I/O in one place: atomic writes, their temporaries, sha256 of a file, CSV tables.

Every file the pipeline writes (shards, index, manifest, checkpoints, tables, zips) goes to
a temporary name next to its final name, ``.<name>.tmp-<pid>-<thread id>``, is fsynced and
renamed over the final name (docs/reliability.md). So a kill never leaves a partial file
under a final name, a failed write leaves the previous file as it was and removes its
temporary, and concurrent writers (threads or processes) never share a temporary: the last
rename wins and each reader sees one complete version. An ``OSError`` about the temporary
(or about no file at all, as a failed ``write`` or ``fsync``) is raised again naming the
*final* file, with its errno; other errors (e.g. a source file a writer reads) pass as they
are. Temporaries left by a killed process are removed by :func:`remove_temporaries`, which
only a directory's lock holder may call.

On an object store (a remote path from :func:`refsam.storage.as_path`) the same calls work
with the store's semantics: the temporary is a sibling key, "rename" is the store's move
(copy then delete: the final key appears complete or not at all), and there is no fsync.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

from refsam.storage import AnyPath, as_path, is_remote

T = TypeVar("T")

TEMPORARY = re.compile(r"^\..+\.tmp-\d+(?:-\d+)?$")
"""Names of the temporaries :func:`temporary_path` makes (and the older ``.tmp-<pid>``)."""


def temporary_path(path: AnyPath) -> AnyPath:
    """``.<name>.tmp-<pid>-<thread id>`` next to ``path``: unique among live writers."""
    path = as_path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_native_id()}")


def _naming(exc: BaseException, final: Path, tmp: Path, what: str) -> BaseException:
    """``exc`` itself, or for an OSError about ``tmp`` or about no file, the same errno
    naming ``final`` (``[Errno 28] No space left on device (writing): '…/final'``)."""
    if not isinstance(exc, OSError):
        return exc
    if exc.filename is not None and str(exc.filename) != str(tmp):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"{reason} ({what})", str(final))


def fsync_path(path: Path) -> None:
    """fsync a file (or a directory: its entries, e.g. a rename) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename in it survives a power cut."""
    with contextlib.suppress(OSError):
        fsync_path(directory)


class PendingFile:
    """A file being written under a temporary name next to ``final``.

    Write :attr:`path` in any way, then :meth:`commit` (fsync + rename over ``final``) or
    :meth:`discard` (remove it; ``final`` untouched). ``what`` goes into error messages
    (``"writing shard"``). A failed commit removes the temporary and names ``final``.
    """

    def __init__(self, final: AnyPath, *, what: str = "writing") -> None:
        self.final = as_path(final)
        self.path = temporary_path(self.final)
        self.what = what

    def sync(self) -> None:
        """fsync the temporary (its bytes are on disk before any rename); an object store
        has the bytes once the upload completed."""
        if not is_remote(self.path):
            self._guard(fsync_path, self.path)

    def rename(self) -> AnyPath:
        """Move the (synced) temporary over the final name."""
        if is_remote(self.path):
            self._guard(self.path.fs.mv, self.path.path, self.final.path)
        else:
            self._guard(os.replace, self.path, self.final)
        return self.final

    def commit(self) -> Path:
        self.sync()
        return self.rename()

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def fail(self, exc: BaseException) -> NoReturn:
        """Discard the temporary and raise ``exc`` (renamed as the module docstring says);
        call it from the ``except`` block that caught ``exc``."""
        self.discard()
        named = _naming(exc, self.final, self.path, self.what)
        if named is exc:
            raise exc
        raise named from exc

    def _guard(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except BaseException as exc:
            self.fail(exc)


@contextlib.contextmanager
def atomic_path(path: AnyPath, *, what: str = "writing") -> Iterator[AnyPath]:
    """Yield a temporary path to write ``path`` through; committed when the block ends
    normally, removed (``path`` untouched) when it raises."""
    pending = PendingFile(path, what=what)
    try:
        yield pending.path
    except BaseException as exc:
        pending.fail(exc)
    pending.commit()


def atomic_write(path: AnyPath, write: Callable[[IO[bytes]], T], *, what: str = "writing") -> T:
    """Call ``write`` with a binary handle on a temporary next to ``path``, then fsync and
    rename it over ``path``; returns what ``write`` returns."""
    with atomic_path(path, what=what) as tmp, tmp.open("wb") as handle:
        return write(handle)


def atomic_write_bytes(path: AnyPath, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (previous content kept on any failure)."""
    atomic_write_many([(as_path(path), data)])


def atomic_write_text(path: AnyPath, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: AnyPath, obj: Any, *, indent: int | None = 2) -> None:
    """``json.dumps(obj, indent=indent)`` plus a newline, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_many(files: Sequence[tuple[AnyPath, bytes]]) -> None:
    """Write several files all-or-nothing against write errors: every temporary is written
    and fsynced first, then they are renamed in the given order (put the file that commits
    the others, e.g. a manifest, last). If any write fails, none of the targets changes."""
    pending = [PendingFile(path) for path, _data in files]
    try:
        for item, (_path, data) in zip(pending, files, strict=True):
            item._guard(item.path.write_bytes, data)
            item.sync()
        for item in pending:
            item.rename()
    except BaseException:
        for item in pending:
            item.discard()
        raise


def remove_temporaries(directory: AnyPath) -> list[AnyPath]:
    """Delete the temporaries (:data:`TEMPORARY`) killed writers left in ``directory``;
    returns them. Only while holding the directory's lock: a live writer's would go too."""
    directory = as_path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if TEMPORARY.match(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


def file_sha256(path: AnyPath) -> str:
    """Full sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with as_path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def csv_bytes(rows: Sequence[Mapping[str, object]]) -> bytes:
    """CSV (``\\r\\n`` lines) of ``rows``: the columns are every key in first-seen order; with
    no columns at all the header is ``empty`` so the file still reads as a table."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns or ["empty"])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def write_csv(path: AnyPath, rows: Sequence[Mapping[str, object]]) -> None:
    """Write ``rows`` as a CSV table (:func:`csv_bytes`) atomically."""
    atomic_write_bytes(path, csv_bytes(rows))
