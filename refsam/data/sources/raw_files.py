"""Reading and checking the files of a raw dataset, shared by every reader.

Whole-file inputs are checked before anything is written (DATA.md "Bad input"): JSON with a
size limit and repeated keys reported (:func:`load_json`, :class:`DupDict`), ids that must
be plain names under the raw root (:func:`unsafe_name`), layout checks that are a fatal
:class:`~refsam.errors.DataError` naming the file (:func:`require_type`,
:func:`require_dir`); plus the content hashes of the ingest fingerprint and the label-map
PNG reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from refsam.data.decode import open_image
from refsam.errors import DataError
from refsam.storage import AnyPath, is_remote, object_listing


class DupDict(dict):
    """A JSON object that keeps the first value of a repeated key and lists the repeats."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self:
                self.duplicates.append(key)
            else:
                self[key] = value


MAX_JSON_BYTES = int(os.environ.get("REFSAM_MAX_JSON_BYTES", 8 << 30))
"""Largest metadata JSON file read (bytes); a bigger one is a clear DataError instead of an
out-of-memory crash. 8 GiB by default (far above any published file); override with the
environment variable ``REFSAM_MAX_JSON_BYTES`` or the ``max_bytes`` argument."""


def load_json(path: Path, expected: str, *, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; a missing/malformed file is a DataError naming file, position and
    what was expected. Objects are :class:`DupDict` (repeated keys are reported, not lost).
    Files over ``max_bytes`` (default :data:`MAX_JSON_BYTES`) and nesting too deep for the
    parser are DataErrors too."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {expected}")
    limit = MAX_JSON_BYTES if max_bytes is None else max_bytes
    size = path.stat().st_size
    if size > limit:
        raise DataError(
            f"{path}: {size} bytes, more than the limit of {limit} bytes for a metadata file "
            "(raise it with REFSAM_MAX_JSON_BYTES if the file is genuine)"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte {exc.start}); expected {expected}") from exc
    try:
        return json.loads(text, object_pairs_hook=DupDict)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
            f"expected {expected}"
        ) from exc
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to parse; expected {expected}") from None


def unsafe_name(value: Any) -> str | None:
    """Why ``value`` cannot be used as one file/folder name under the raw root (a video id
    or a frame name): None when it can. Refused: non-strings, empty, ``.``/``..``, path
    separators and NUL (an absolute id would otherwise replace the root when joined)."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a non-empty string"
    if value in (".", "..") or any(c in value for c in ("/", "\\", "\0")):
        return f"{value!r} is not a plain name (path separator, '..' or NUL)"
    return None


def natural_key(value: str) -> tuple[int, str]:
    """Sort key: numeric ids in numeric order, then the others."""
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def require_type(value: Any, kind: type, path: Path, where: str, expected: str) -> Any:
    """Fatal DataError unless ``value`` is a ``kind`` (layout check of a whole file)."""
    if not isinstance(value, kind):
        raise DataError(f"{path}: {where} is a {type(value).__name__}; expected {expected}")
    return value


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: directory not found; expected {what}")
    return path


def tree_fingerprint(paths: list[AnyPath], root: AnyPath) -> str:
    """sha256 over (relative path, size, mtime_ns) of every file under ``paths`` (sorted);
    on an object store (relative key, size, ETag)."""
    if is_remote(root):
        return hashlib.sha256("\n".join(object_listing(paths, root)).encode()).hexdigest()
    prefix = len(str(root)) + 1
    entries: list[str] = []
    stack = [str(p) for p in paths]
    while stack:
        base = stack.pop()
        if os.path.isfile(base):
            stat = os.stat(base)
            entries.append(f"{base[prefix:]}\t{stat.st_size}\t{stat.st_mtime_ns}")
            continue
        if not os.path.isdir(base):
            continue
        with os.scandir(base) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    stat = entry.stat()
                    entries.append(f"{entry.path[prefix:]}\t{stat.st_size}\t{stat.st_mtime_ns}")
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def read_label_map(path: Path) -> Any:
    """A palette ("P") or grey ("L") PNG → H×W uint8 label map (pixel value = object id).

    Raises FileNotFoundError when missing and ValueError when unreadable or of another mode.
    """
    import numpy as np

    data = path.read_bytes()
    with open_image(data, "mask PNG") as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"mask PNG has mode {image.mode}; expected a palette (P) PNG")
        try:
            return np.asarray(image)
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"unreadable mask PNG: {exc}") from exc
