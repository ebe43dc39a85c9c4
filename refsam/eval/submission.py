"""Server submission zips: writing and checking.

A zip format (:class:`~refsam.eval.prediction_layout.ZipFormat`) belongs to an evaluation
family (:mod:`refsam.eval.families`) and is the family's prediction layout at the zip root;
functions take the format or its name (DATA.md):

- ``ytvos`` (Ref-YouTube-VOS): ``Annotations/<vid>/<exp_id>/<frame>.png``;
- ``mevis`` (MeViS): ``<vid>/<exp_id>/<frame>.png``;

each PNG 8-bit single channel, 0/255, at the frame's original size, one per listed frame.

Writing is atomic (a temporary name in the output folder, renamed when complete) and never
writes outside the zip: ids containing path separators, ``..`` or other unsafe names are
rejected. The checker lists *every* problem (missing video / expression / frame, wrong size,
wrong encoding, unexpected file) against the split's ``meta_expressions.json``, with frame
sizes taken from its ``JPEGImages`` folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from refsam.data.decode import open_image
from refsam.errors import UserError
from refsam.eval.families import zip_format
from refsam.eval.io import encode_binary_png
from refsam.eval.prediction_layout import ZipFormat
from refsam.fsio import PendingFile

Layout = str | ZipFormat
"""A zip format or its name (``ytvos``, ``mevis``, or one a registered family adds)."""
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _safe(part: str, what: str) -> str:
    part = str(part)
    if not _SAFE_ID.match(part) or part in (".", "..") or ".." in part:
        raise UserError(
            f"unsafe {what} {part!r} for a submission path: letters, digits, '_', '-', '.' only"
        )
    return part


def _format(layout: Layout) -> ZipFormat:
    return layout if isinstance(layout, ZipFormat) else zip_format(layout)


def member_name(layout: Layout, video: str, exp_id: str, frame: str) -> str:
    """The zip member path of one mask (ids validated)."""
    fmt = _format(layout)
    parts = [_safe(video, "video id"), _safe(exp_id, "expression id"), _safe(frame, "frame name")]
    return fmt.layout.member(*parts)


class SubmissionZip:
    """Write a submission zip mask by mask; the file appears only when complete.

    Usage::

        with SubmissionZip(out, layout="ytvos") as sub:
            sub.add(video, exp_id, frame, mask)   # H×W bool/0-1 at original size

    On an exception the partial temporary file is removed and ``out`` is left untouched.
    """

    def __init__(self, out: Path, *, layout: Layout) -> None:
        self.layout = _format(layout)
        self.out = Path(out)
        if self.out.is_dir():
            raise UserError(f"{self.out}: is a folder; expected a .zip file path")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._pending = PendingFile(self.out)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(
            self._pending.path, "w", zipfile.ZIP_STORED
        )
        self._names: set[str] = set()

    def add(self, video: str, exp_id: str, frame: str, mask: np.ndarray) -> None:
        """Add one H×W mask (non-zero = foreground) as an 8-bit 0/255 PNG."""
        self.add_png(video, exp_id, frame, encode_binary_png(mask))

    def add_png(self, video: str, exp_id: str, frame: str, data: bytes) -> None:
        """Add already-encoded PNG bytes (e.g. copied from a prediction folder)."""
        if self._zip is None:
            raise RuntimeError("submission zip already closed")
        name = member_name(self.layout, video, exp_id, frame)
        if name in self._names:
            raise UserError(f"{self.out}: {name} added twice")
        self._names.add(name)
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        self._zip.writestr(info, data)

    def close(self) -> Path:
        """Finish the zip and move it into place; returns the output path."""
        if self._zip is not None:
            archive, self._zip = self._zip, None
            try:
                archive.close()
            except BaseException as exc:  # disk full, no permission…: ``out`` stays as it was
                self._pending.fail(exc)
            self._pending.commit()
        return self.out

    def abort(self) -> None:
        """Drop the partial zip (``out`` untouched)."""
        if self._zip is not None:
            with contextlib.suppress(OSError):
                self._zip.close()  # may fail again on a full disk: the file goes anyway
            self._zip = None
        self._pending.discard()

    def __enter__(self) -> SubmissionZip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def zip_prediction_dir(pred_dir: Path, out: Path, *, layout: Layout) -> Path:
    """Pack a prediction folder in the format's layout (its prefix folder may be left out)
    into a submission zip."""
    fmt = _format(layout)
    root = fmt.layout.found_root(pred_dir)
    if not root.is_dir():
        raise UserError(f"{pred_dir}: prediction folder not found")
    files = sorted(root.glob("*/*/*.png"))
    if not files:
        raise UserError(f"{root}: no <vid>/<exp_id>/<frame>.png files")
    with SubmissionZip(out, layout=fmt) as sub:
        for path in files:
            sub.add_png(path.parent.parent.name, path.parent.name, path.stem, path.read_bytes())
    return Path(out)


def _load_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["videos"]
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}") from None
    except (KeyError, TypeError):
        raise UserError(f"{path}: expected {{'videos': {{...}}}}") from None


class _Members:
    """Uniform read access to a submission given as a zip file or a folder."""

    def __init__(self, source: Path) -> None:
        self.source = Path(source)
        self._zip = zipfile.ZipFile(self.source) if self.source.is_file() else None
        if self._zip is not None:
            self.names = {n for n in self._zip.namelist() if not n.endswith("/")}
        elif self.source.is_dir():
            self.names = {
                p.relative_to(self.source).as_posix() for p in self.source.rglob("*") if p.is_file()
            }
        else:
            raise UserError(f"{source}: submission zip or folder not found")

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.source / name).read_bytes()


def _png_problem(data: bytes, size: tuple[int, int]) -> str | None:
    try:
        with open_image(data, "PNG") as image:
            if image.format != "PNG":
                return f"not a PNG ({image.format})"
            if image.size != size:
                return f"size {image.size[0]}x{image.size[1]}, expected {size[0]}x{size[1]} (WxH)"
            if image.mode not in ("L", "P", "1"):
                return f"mode {image.mode}, expected an 8-bit single-channel PNG"
            values = np.unique(np.asarray(image))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable PNG ({exc})"
    if image.mode != "1" and not set(values.tolist()) <= {0, 255}:
        return f"values {values[:6].tolist()}, expected 0/255"
    return None


def check_submission(
    submission: Path,
    meta_expressions: Path,
    jpeg_root: Path,
    *,
    layout: Layout,
    exclude_videos: Iterable[str] = (),
) -> list[str]:
    """Every problem of a submission (zip or folder) against a split; empty list = valid.

    Args:
        submission: the zip (or an unpacked folder with the same root).
        meta_expressions: the split's ``meta_expressions.json`` (videos, expressions, frames).
        jpeg_root: the split's ``JPEGImages`` folder (frame sizes).
        exclude_videos: videos not expected (e.g. Ref-YouTube-VOS test videos in valid).
    """
    fmt = _format(layout)
    videos = _load_meta(meta_expressions)
    members = _Members(submission)
    excluded = set(exclude_videos)
    present = [p for p in map(fmt.layout.member_parts, members.names) if p is not None]
    present_videos = {parts[0] for parts in present if len(parts) > 1}
    present_exps = {(parts[0], parts[1]) for parts in present if len(parts) > 2}
    expected: set[str] = set()
    sizes: dict[Path, tuple[int, int]] = {}
    problems: list[str] = []
    for video in sorted(v for v in videos if v not in excluded):
        entry = videos[video]
        frames = list(entry["frames"])
        if video not in present_videos:
            problems.append(f"missing video {video}")
        for exp_id in entry["expressions"]:
            if (video, str(exp_id)) not in present_exps:
                problems.append(f"missing expression {video}/{exp_id}")
            for frame in frames:
                name = fmt.layout.member(video, str(exp_id), frame)
                expected.add(name)
                if name not in members.names:
                    problems.append(f"missing frame {name}")
                    continue
                jpeg = Path(jpeg_root) / video / f"{frame}.jpg"
                size = sizes[jpeg] if jpeg in sizes else sizes.setdefault(jpeg, _jpeg_size(jpeg))
                issue = _png_problem(members.read(name), size)
                if issue:
                    problems.append(f"{name}: {issue}")
    problems.extend(f"unexpected file {n}" for n in sorted(members.names - expected))
    return problems


def _jpeg_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise UserError(f"{path}: frame image not found (needed for the mask size)") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: unreadable frame image ({exc})") from None
