"""Reading our shard tars safely: member checks and bounded retries of transient read errors.

Our shards hold only flat regular files named ``<key>.<frame>.jpg`` / ``<key>.json``
(DATA.md). A member that is not a regular file (symlink, hard link, device, folder) or whose
name is absolute, contains a path separator or ``..`` is refused with a
:class:`~refsam.errors.DataError` naming the shard and the member: nothing here ever
extracts to disk, but a shard like that was not written by ``refsam ingest``.

A transient read error (an ``OSError`` such as EIO while opening or reading) is retried
:data:`READ_RETRIES` times, resuming after the samples already handed out; after that the
error is raised as an ``OSError`` naming the shard. A shard URL (``s3://bucket/…/shard-…tar``)
is streamed through fsspec in large sequential blocks: nothing is downloaded ahead, and a
retry re-opens the object and skips the samples already handed out.
"""

from __future__ import annotations

import logging
import tarfile
import time
from collections.abc import Iterator
from typing import IO, Any

from refsam.errors import DataError
from refsam.storage import as_path, is_url

log = logging.getLogger(__name__)
READ_RETRIES = 3
"""Extra attempts after a failed read of one shard (so 4 attempts in all)."""
RETRY_DELAY_S = 0.05


STREAM_BLOCK = 8 << 20
"""Bytes per ranged read when streaming a shard from an object store."""


def open_shard(path: str) -> IO[bytes]:
    """Open a shard for reading (the one place a shard file is opened): a local file, or
    an object-store URL streamed in :data:`STREAM_BLOCK` reads."""
    if is_url(path):
        return as_path(path).open("rb", block_size=STREAM_BLOCK, cache_type="readahead")
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def member_problem(info: tarfile.TarInfo) -> str | None:
    """Why a tar member cannot be part of one of our shards (None when it can)."""
    name = info.name
    if not info.isreg():
        kind = "symlink" if info.issym() else "hard link" if info.islnk() else "non-regular"
        return f"member {name!r} is a {kind} entry; shards hold regular files only"
    if not name or name.startswith(("/", "\\")) or "/" in name or "\\" in name:
        return f"member {name!r} has a path (absolute or with separators); expected a flat name"
    if ".." in name or name.startswith("."):
        return f"member {name!r} contains '..' or starts with '.'"
    return None


def _split(name: str) -> tuple[str, str]:
    key, _, suffix = name.partition(".")
    return key, suffix.lower()


def _samples(handle: IO[bytes], url: str) -> Iterator[dict[str, Any]]:
    """Group the members of one shard into samples ``{"__key__", "__url__", suffix: bytes}``."""
    current: dict[str, Any] | None = None
    with tarfile.open(fileobj=handle, mode="r|") as stream:
        for info in stream:
            problem = member_problem(info)
            if problem:
                raise DataError(f"{url}: {problem}; refusing this shard")
            key, suffix = _split(info.name)
            if not suffix:
                raise DataError(f"{url}: member {info.name!r} has no '.<suffix>'")
            extracted = stream.extractfile(info)
            assert extracted is not None  # a regular file
            data = extracted.read()
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            if suffix in current:
                raise DataError(f"{url}: member {info.name!r} repeated")
            current[suffix] = data
    if current is not None:
        yield current


def iter_shard(url: str, *, retries: int = READ_RETRIES) -> Iterator[dict[str, Any]]:
    """The samples of one shard, retrying transient ``OSError`` reads (see module docstring)."""
    done = 0
    attempt = 0
    while True:
        try:
            with open_shard(url) as handle:
                for index, sample in enumerate(_samples(handle, url)):
                    if index >= done:
                        done += 1
                        yield sample
            return
        except tarfile.TarError as exc:
            raise DataError(f"{url}: unreadable or truncated shard ({exc})") from exc
        except OSError as exc:
            attempt += 1
            if attempt > retries:
                raise OSError(
                    exc.errno,
                    f"{exc.strerror or exc} (reading shard, gave up after {attempt} attempts)",
                    url,
                ) from exc
            log.warning("%s: read error (%s); retry %d of %d", url, exc, attempt, retries)
            time.sleep(RETRY_DELAY_S * 2 ** (attempt - 1))


def shard_samples(sources: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """WebDataset pipeline stage: ``{"url": ...}`` items → samples of each shard in turn."""
    for source in sources:
        yield from iter_shard(source["url"])
