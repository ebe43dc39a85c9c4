"""The reader contract (:class:`Source`) and the record-level helpers readers share; the
file-level ones (JSON, names, layout checks, fingerprints, label maps) are in
:mod:`refsam.data.sources.raw_files`.

A reader (one per raw format, one file each) validates the whole-file inputs in its
constructor — missing root, wrong layout, malformed JSON, unsafe pickle: a fatal
:class:`~refsam.errors.DataError` before anything is written — and then loads one video
at a time with :meth:`Source.load_video`, returning the good record (if any) and the
quarantined items (DATA.md "Bad input").
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from refsam.data.decode import check_jpeg
from refsam.data.sources.raw_files import (
    read_label_map,
    require_dir,
    tree_fingerprint,
    unsafe_name,
)
from refsam.data.types import Expression, ObjectTrack, QuarantineItem, VideoRecord
from refsam.errors import DataError
from refsam.fsio import file_sha256
from refsam.storage import as_path, is_within


@dataclass
class LoadResult:
    """What loading one video gives: the good record (None if the video is bad) and the
    quarantined items."""

    record: VideoRecord | None
    quarantined: list[QuarantineItem] = field(default_factory=list)


class Source(ABC):
    """One raw dataset split. Subclasses set ``name``, ``raw_dir`` (the root's folder name in
    the community layout), ``splits``, ``masked_splits`` (splits with public GT) and
    implement :meth:`video_ids`, :meth:`load_video`, :meth:`fingerprint_paths`."""

    name: ClassVar[str]
    raw_dir: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    masked_splits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: Path, split: str) -> None:
        if split not in self.splits:
            raise DataError(
                f"{self.name}: unknown split {split!r}; expected one of {', '.join(self.splits)}"
            )
        self.root = as_path(root)
        self.split = split
        require_dir(self.root, f"the {self.name} root")
        self.planning_quarantine: list[QuarantineItem] = []
        self.metadata_files: dict[str, str] = {}

    @property
    def has_masks(self) -> bool:
        return self.split in self.masked_splits

    @abstractmethod
    def video_ids(self) -> list[str]:
        """Sorted ids of the videos to ingest (the unit of the shard plan)."""

    @abstractmethod
    def load_video(self, video: str) -> LoadResult:
        """Read, validate and convert one video (frames, masks, expressions)."""

    @abstractmethod
    def fingerprint_paths(self) -> list[Path]:
        """Files/directories whose content defines this split's input."""

    def inside(self, path: Path) -> bool:
        """Whether ``path`` stays under the raw root lexically (no ``..`` escape, no absolute
        replacement). Symlinks the user put inside the root are followed deliberately."""
        return is_within(path, self.root)

    def fingerprint(self) -> str:
        meta = json.dumps(self.metadata_files, sort_keys=True)
        paths = [p for p in self.fingerprint_paths() if self.inside(p)]
        tree = tree_fingerprint(paths, self.root)
        return hashlib.sha256(f"{self.name}\n{self.split}\n{meta}\n{tree}".encode()).hexdigest()

    def iter_samples(self) -> Iterator[VideoRecord]:
        """Every good video record in plan order (quarantined items are skipped)."""
        for video in self.video_ids():
            if unsafe_name(video):
                continue
            result = self.load_video(video)
            if result.record is not None:
                yield result.record

    # ----- helpers shared by readers -----------------------------------------------------
    def note_metadata(self, path: Path) -> None:
        self.metadata_files[str(path.relative_to(self.root))] = file_sha256(path)

    def rel(self, path: Path) -> str:
        """``path`` relative to the raw root (as given when it is outside it)."""
        text, root = str(path), str(self.root)
        return text[len(root) + 1 :] if text.startswith(root + os.sep) else text

    def quarantine(
        self, reason: str, unit: str, source: Path | str, message: str, **ids: Any
    ) -> QuarantineItem:
        src = source if isinstance(source, str) else self.rel(source)
        return QuarantineItem(reason=reason, unit=unit, source=src, message=message, **ids)

    def read_label_maps(
        self, mask_dir: Path, video: str, names: list[str], size: tuple[int, int]
    ) -> tuple[list[Path], list[Any]] | QuarantineItem:
        """Palette label maps ``mask_dir/<video>/<name>.png`` of every frame, each of the
        frame size; the first missing, unreadable or wrong-size one quarantines the video."""
        paths: list[Path] = []
        maps: list[Any] = []
        for name in names:
            path = mask_dir / video / f"{name}.png"
            paths.append(path)
            try:
                labels = read_label_map(path)
            except FileNotFoundError:
                message = f"mask of frame {name} is missing"
                return self.quarantine("missing_mask", "video", path, message, video=video)
            except ValueError as exc:
                message = f"frame {name}: {exc}"
                return self.quarantine("bad_mask", "video", path, message, video=video)
            if labels.shape != size:
                message = f"mask {labels.shape[0]}×{labels.shape[1]} ≠ frame {size[0]}×{size[1]}"
                return self.quarantine("mask_size", "video", path, message, video=video)
            maps.append(labels)
        return paths, maps

    def read_frames(
        self, video: str, names: list[str], paths: list[Path]
    ) -> tuple[list[bytes], tuple[int, int]] | QuarantineItem:
        """Read and validate every frame (complete JPEG, one size); a bad frame → video item."""
        frames: list[bytes] = []
        size: tuple[int, int] | None = None
        if not names:
            return self.quarantine(
                "missing_frame",
                "video",
                paths[0].parent if paths else self.root,
                "the video lists no frames",
                video=video,
            )
        for name, path in zip(names, paths, strict=True):
            problem = unsafe_name(name)
            if problem or not self.inside(path):
                return self.quarantine(
                    "unsafe_path",
                    "video",
                    str(path),
                    f"frame name {problem or repr(name)}: refusing a path outside the raw root",
                    video=video,
                )
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return self.quarantine(
                    "missing_frame", "video", path, f"frame {name} is missing", video=video
                )
            try:
                hw = check_jpeg(data)
            except ValueError as exc:
                return self.quarantine(
                    "bad_frame", "video", path, f"frame {name}: {exc}", video=video
                )
            if size is None:
                size = hw
            elif hw != size:
                return self.quarantine(
                    "frame_size",
                    "video",
                    path,
                    f"frame {name} is {hw[0]}×{hw[1]}, the video is {size[0]}×{size[1]}",
                    video=video,
                )
            frames.append(data)
        assert size is not None
        return frames, size

    def assemble(
        self,
        *,
        video: str,
        names: list[str],
        paths: list[Path],
        frames: list[bytes],
        size: tuple[int, int],
        objects: list[ObjectTrack],
        expressions: list[Expression],
        quarantined: list[QuarantineItem],
        void: list[dict | None] | None = None,
        mask_paths: list[Path] | None = None,
    ) -> LoadResult:
        """Drop objects never present (object_absent) and expressions that refer to a
        quarantined or unknown object; quarantine the video if no expression is left."""
        bad_objects = {q.obj_id: q.reason for q in quarantined if q.unit == "object"}
        kept_objects: list[ObjectTrack] = []
        for obj in objects:
            if obj.obj_id in bad_objects:
                continue
            if obj.masks is not None and all(m is None for m in obj.masks):
                quarantined.append(
                    self.quarantine(
                        "object_absent",
                        "object",
                        paths[0].parent,
                        f"object {obj.obj_id} is absent from every mask",
                        video=video,
                        obj_id=obj.obj_id,
                    )
                )
                bad_objects[obj.obj_id] = "object_absent"
                continue
            kept_objects.append(obj)
        known = {o.obj_id for o in kept_objects}
        kept_expressions: list[Expression] = []
        for exp in expressions:
            bad = [i for i in exp.obj_ids if i in bad_objects]
            unknown = [i for i in exp.obj_ids if i not in known and i not in bad_objects]
            if bad:
                quarantined.append(
                    self.quarantine(
                        "object_quarantined",
                        "expression",
                        paths[0].parent,
                        f"refers to quarantined object(s) {', '.join(f'{i} ({bad_objects[i]})' for i in bad)}",
                        video=video,
                        exp_id=exp.exp_id,
                    )
                )
            elif unknown and self.has_masks:
                quarantined.append(
                    self.quarantine(
                        "unknown_object",
                        "expression",
                        paths[0].parent,
                        f"refers to object(s) {', '.join(unknown)} that the video does not have",
                        video=video,
                        exp_id=exp.exp_id,
                    )
                )
            else:
                kept_expressions.append(exp)
        if not kept_expressions:
            quarantined.append(
                self.quarantine(
                    "no_expressions",
                    "video",
                    paths[0].parent,
                    "no valid expression left for this video",
                    video=video,
                )
            )
            return LoadResult(None, quarantined)
        sources = {
            self.rel(p): hashlib.sha256(b).hexdigest() for p, b in zip(paths, frames, strict=True)
        }
        for path in mask_paths or []:
            sources[self.rel(path)] = file_sha256(path)
        sources.update(self.metadata_files)
        record = VideoRecord(
            dataset=self.name,
            split=self.split,
            video=video,
            frame_names=list(names),
            frame_paths=list(paths),
            height=size[0],
            width=size[1],
            objects=kept_objects,
            expressions=kept_expressions,
            void=void,
            sources=sources,
            frame_bytes=frames,
        )
        return LoadResult(record, quarantined)


def check_text(
    source: Source, text: Any, where: Path, video: str, exp_id: str
) -> QuarantineItem | None:
    """An expression text must be a non-empty string."""
    if not isinstance(text, str):
        return source.quarantine(
            "bad_expression",
            "expression",
            where,
            f"expression text is a {type(text).__name__}; expected a string",
            video=video,
            exp_id=exp_id,
        )
    if not text.strip():
        return source.quarantine(
            "empty_text", "expression", where, "empty expression text", video=video, exp_id=exp_id
        )
    return None
