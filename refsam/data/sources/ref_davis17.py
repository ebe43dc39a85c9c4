"""Ref-DAVIS17 reader: DAVIS 2017 480p (palette masks, 255 = void) + the four text
annotation files of Khoreva et al. (annot1 UTF-8, annot2 Latin-1; known name fixes)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from refsam.data.rle import encode_label
from refsam.data.sources import register
from refsam.data.sources.base import LoadResult, Source
from refsam.data.sources.raw_files import natural_key, require_dir
from refsam.data.types import Expression, ObjectTrack, QuarantineItem
from refsam.errors import DataError

# (file, encoding, annotation_set): 0 annot1 first-frame, 1 annot1 full-video, 2/3 annot2.
TEXT_FILES = (
    ("Davis17_annot1.txt", "utf-8", 0),
    ("Davis17_annot1_full_video.txt", "utf-8", 1),
    ("Davis17_annot2.txt", "latin-1", 2),
    ("Davis17_annot2_full_video.txt", "latin-1", 3),
)
NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
LINE = re.compile(r'^(?P<video>\S+)\s+(?P<obj>\d+)\s+"(?P<text>.*)"\s*$')
VOID = 255


@register
class RefDAVIS17(Source):
    name = "ref-davis17"
    raw_dir = "ref-davis"
    splits = ("train", "valid")
    masked_splits = ("train", "valid")
    annotation_sets = len(TEXT_FILES)
    """Expressions carry ``annotation_set`` 0 … annotation_sets − 1 (one per text file)."""

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        davis = require_dir(self.root / "DAVIS", "<root>/DAVIS (DAVIS 2017 480p)")
        self.image_dir = require_dir(davis / "JPEGImages" / "480p", "DAVIS/JPEGImages/480p/<seq>/")
        self.mask_dir = require_dir(
            davis / "Annotations_unsupervised" / "480p",
            "DAVIS/Annotations_unsupervised/480p/<seq>/",
        )
        lists = {
            s: self._read_list(davis / "ImageSets" / "2017" / f"{s}.txt") for s in ("train", "val")
        }
        self.videos = lists["train" if split == "train" else "val"]
        known = set(lists["train"]) | set(lists["val"])
        self.text: dict[str, list[Expression]] = {v: [] for v in self.videos}
        self.text_quarantine: dict[str, list[QuarantineItem]] = {v: [] for v in self.videos}
        text_dir = require_dir(
            self.root / "davis_text_annotations", "<root>/davis_text_annotations/"
        )
        for file_name, encoding, annotation_set in TEXT_FILES:
            self._read_text(text_dir / file_name, encoding, annotation_set, known)

    def _read_list(self, path: Path) -> list[str]:
        if not path.is_file():
            raise DataError(f"{path}: file not found; expected one DAVIS sequence name per line")
        self.note_metadata(path)
        return sorted(
            {
                line.strip()
                for line in path.read_text(encoding="ascii", errors="replace").splitlines()
                if line.strip()
            }
        )

    def _read_text(self, path: Path, encoding: str, annotation_set: int, known: set[str]) -> None:
        if not path.is_file():
            raise DataError(
                f'{path}: file not found; expected lines <video> <obj_id> "<expression>"'
            )
        self.note_metadata(path)
        seen: set[tuple[str, str]] = set()
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"{self.rel(path)}:{number}"
            first = raw.strip().split(b" ", 1)[0].decode("ascii", "replace")
            video = NAME_FIXES.get(first, first)
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                self._bad(
                    video,
                    known,
                    "bad_encoding",
                    where,
                    f"line is not {encoding} (byte {exc.start})",
                )
                continue
            match = LINE.match(line.strip())
            if not match:
                self._bad(
                    video, known, "bad_line", where, 'expected <video> <obj_id> "<expression>"'
                )
                continue
            obj_id, text = str(int(match["obj"])), match["text"]
            exp_id = f"{annotation_set}_{obj_id}"
            if video not in known:
                self.planning_quarantine.append(
                    self.quarantine(
                        "unknown_video",
                        "expression",
                        where,
                        f"video {video!r} is not in DAVIS 2017",
                        video=video,
                        exp_id=exp_id,
                    )
                )
                continue
            if video not in self.text:
                continue  # belongs to the other split
            if (video, obj_id) in seen:
                self.text_quarantine[video].append(
                    self.quarantine(
                        "duplicate_id",
                        "expression",
                        where,
                        f"object {obj_id} already has an expression in this file; the first is kept",
                        video=video,
                        exp_id=exp_id,
                    )
                )
                continue
            seen.add((video, obj_id))
            if not text.strip():
                self.text_quarantine[video].append(
                    self.quarantine(
                        "empty_text",
                        "expression",
                        where,
                        "empty expression text",
                        video=video,
                        exp_id=exp_id,
                    )
                )
                continue
            self.text[video].append(Expression(exp_id, text, [obj_id], annotation_set))

    def _bad(self, video: str, known: set[str], reason: str, where: str, message: str) -> None:
        if video in self.text:
            self.text_quarantine[video].append(
                self.quarantine(reason, "expression", where, message, video=video)
            )
        elif video not in known:
            self.planning_quarantine.append(
                self.quarantine(reason, "expression", where, message, video=video)
            )

    def video_ids(self) -> list[str]:
        return list(self.videos)

    def fingerprint_paths(self) -> list[Path]:
        return [d / v for v in self.videos for d in (self.image_dir, self.mask_dir)]

    def load_video(self, video: str) -> LoadResult:
        quarantined = list(self.text_quarantine[video])
        expressions = sorted(
            self.text[video], key=lambda e: (e.annotation_set, natural_key(e.obj_ids[0]))
        )
        frame_dir = self.image_dir / video
        paths = sorted(frame_dir.glob("*.jpg")) if frame_dir.is_dir() else []
        if not paths:
            return LoadResult(
                None,
                [
                    *quarantined,
                    self.quarantine(
                        "missing_frame", "video", frame_dir, "no frames found", video=video
                    ),
                ],
            )
        names = [p.stem for p in paths]
        orphans = sorted({p.stem for p in (self.mask_dir / video).glob("*.png")} - set(names))
        if orphans:
            return LoadResult(
                None,
                [
                    *quarantined,
                    self.quarantine(
                        "missing_frame",
                        "video",
                        frame_dir,
                        f"frame(s) {', '.join(orphans)} have masks but no JPEG",
                        video=video,
                    ),
                ],
            )
        loaded = self.read_frames(video, names, paths)
        if isinstance(loaded, QuarantineItem):
            return LoadResult(None, [loaded, *quarantined])
        frames, size = loaded
        read = self.read_label_maps(self.mask_dir, video, names, size)
        if isinstance(read, QuarantineItem):
            return LoadResult(None, [*quarantined, read])
        mask_paths, labels_per_frame = read
        present = set(np.unique(np.stack(labels_per_frame)).tolist()) - {0, VOID}
        obj_ids = sorted(
            {str(i) for i in present} | {e.obj_ids[0] for e in expressions}, key=natural_key
        )
        objects = [
            ObjectTrack(obj_id, None, encode_label(labels_per_frame, int(obj_id)))
            for obj_id in obj_ids
        ]
        void = encode_label(labels_per_frame, VOID)
        return self.assemble(
            video=video,
            names=names,
            paths=paths,
            frames=frames,
            size=size,
            objects=objects,
            expressions=expressions,
            quarantined=quarantined,
            void=void,
            mask_paths=mask_paths,
        )
