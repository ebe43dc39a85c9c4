"""Where data lives: a local path or an object-store URL, behind one path type.

A root the user names (``data.shards_root``, ``refsam ingest --out``, ``refsam shards
verify``…) is either a local path (``datasets/shards``, ``file:///data/shards``) or an
fsspec URL (``s3://bucket/refsam/shards``, ``gs://…``, ``memory://…``). :func:`as_path`
turns it into a :class:`pathlib.Path` or a :class:`upath.UPath` (universal-pathlib: the
pathlib API over fsspec), so the code that joins, lists, opens and reads files is the same
for both. What differs — atomic replace, ``fsync``, folders that do not exist on object
stores, an exclusive create for locks — is decided here and in :mod:`refsam.fsio`.

Credentials and endpoints come from the backend's own standard configuration: for S3
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` (MinIO, Ceph,
a local test server), ``~/.aws/config`` profiles, or instance roles; nothing here reads
them itself.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated, Any, TypeAlias

from pydantic import PlainSerializer, PlainValidator
from upath import UPath

from refsam.errors import UserError

AnyPath: TypeAlias = Path | UPath
"""A local path or an object-store path (remote :class:`~upath.UPath`)."""


def is_url(value: str | os.PathLike[str] | UPath) -> bool:
    """Whether ``value`` names an object-store location (a ``scheme://`` other than
    ``file://``)."""
    if isinstance(value, Path):
        return False
    if isinstance(value, UPath):
        return value.protocol not in ("", "file", "local")
    scheme, sep, _rest = str(value).partition("://")
    return bool(sep) and scheme.isidentifier() and scheme not in ("file", "local")


def as_path(value: str | os.PathLike[str] | UPath) -> AnyPath:
    """A :class:`~pathlib.Path` for a local path (``file://`` stripped), a remote
    :class:`~upath.UPath` for an fsspec URL; UserError for a scheme no installed fsspec
    backend knows."""
    if isinstance(value, Path):
        return value
    if isinstance(value, UPath):
        return value if is_url(value) else Path(value.path)
    text = os.fspath(value) if not isinstance(value, str) else value
    if not is_url(text):
        return Path(text.removeprefix("file://"))
    try:
        # no listings cache: other processes (workers, other nodes) change the bucket, and
        # a stale cached size or ETag would fail a read of an object replaced since
        return UPath(text, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise UserError(
            f"{text}: no storage backend for this URL ({exc}); S3 needs s3fs (installed "
            "with refsam), other stores their fsspec package (gcsfs, adlfs, …)"
        ) from None


def is_remote(path: Any) -> bool:
    """Whether ``path`` (an :func:`as_path` result or any value) is on an object store."""
    return isinstance(path, UPath) and is_url(path)


def is_within(path: AnyPath, root: AnyPath) -> bool:
    """Whether ``path`` stays under ``root`` lexically (no ``..`` escape, no absolute
    replacement); symlinks inside a local root are followed deliberately."""
    if is_remote(root):
        if not is_remote(path) or path.protocol != root.protocol:
            return False
        base, target = posixpath.normpath(root.path), posixpath.normpath(path.path)
        return target == base or target.startswith(base.rstrip("/") + "/")
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    return target == base or target.startswith(base + os.sep)


def object_listing(paths: list[AnyPath], root: AnyPath) -> list[str]:
    """``<path relative to root>\t<size>\t<version>`` of every object under ``paths`` on
    an object store, sorted; the version is the store's ETag (its content tag), else its
    modification time."""
    entries = []
    for path in paths:
        for name, info in sorted(path.fs.find(path.path, detail=True).items()):
            version = info.get("ETag") or info.get("etag") or info.get("LastModified", "")
            relative = name[len(root.path.rstrip("/")) + 1 :]
            entries.append(f"{relative}\t{info.get('size')}\t{str(version).strip(chr(34))}")
    return sorted(entries)


def ensure_dir(path: AnyPath) -> None:
    """``mkdir -p`` for a local folder. Object stores have no folders: there the bucket
    (top-level container) must exist — it is never created as a side effect of a typo —
    and the prefix appears with its first object."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        return
    bucket = path.path.split("/", 1)[0]
    try:
        found = path.fs.exists(bucket)
    except PermissionError as exc:
        raise UserError(f"{path}: access denied to bucket {bucket!r} ({exc})") from None
    if not found:
        raise UserError(
            f"{path}: bucket {bucket!r} does not exist at {path.protocol}:// "
            f"(endpoint {os.environ.get('AWS_ENDPOINT_URL', 'default')}); create it first"
        )


def create_exclusive(path: AnyPath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if nothing is there yet (``O_EXCL`` locally,
    a conditional ``If-None-Match: *`` write on S3); False when it already exists."""
    try:
        with path.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        return False
    return True


def _validate(value: Any) -> AnyPath:
    if isinstance(value, str | os.PathLike | UPath):
        return as_path(value)
    raise ValueError(f"expected a path or URL, got {type(value).__name__}")


Root = Annotated[
    AnyPath, PlainValidator(_validate), PlainSerializer(str, return_type=str, when_used="always")
]
"""Config field type for a data root: a local path or an fsspec URL (:func:`as_path`)."""
