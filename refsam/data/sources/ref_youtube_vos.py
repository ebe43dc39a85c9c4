"""Ref-YouTube-VOS reader (DATA.md): ``train`` with palette masks; ``valid`` (valid − test)
and ``test`` read ``valid/JPEGImages`` and are sharded without masks."""

from __future__ import annotations

from pathlib import Path

from refsam.data.rle import encode_label
from refsam.data.sources import register
from refsam.data.sources.base import LoadResult, Source, check_text
from refsam.data.sources.raw_files import DupDict, load_json, natural_key, require_dir, require_type
from refsam.data.types import Expression, ObjectTrack, QuarantineItem

META_EXPECTED = (
    '{"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [str]}}}'
)


@register
class RefYouTubeVOS(Source):
    name = "ref-youtube-vos"
    raw_dir = "ref-youtube-vos"
    splits = ("train", "valid", "test")
    masked_splits = ("train",)

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        image_split = "train" if split == "train" else "valid"
        self.image_dir = require_dir(
            self.root / image_split / "JPEGImages", "<root>/<split>/JPEGImages/<vid>/"
        )
        self.videos = self._meta_expressions(split)
        if split == "valid":  # the competition valid set = valid − test
            test = self._meta_expressions("test") if self._meta_path("test").is_file() else {}
            self.videos = {v: e for v, e in self.videos.items() if v not in test}
        self.objects_meta: dict = {}
        if split == "train":
            self.mask_dir = require_dir(
                self.root / "train" / "Annotations", "<root>/train/Annotations/<vid>/"
            )
            meta_path = self.root / "train" / "meta.json"
            meta = load_json(
                meta_path, '{"videos": {vid: {"objects": {obj_id: {"category", "frames"}}}}}'
            )
            self.note_metadata(meta_path)
            videos = require_type(
                meta.get("videos") if isinstance(meta, dict) else None,
                dict,
                meta_path,
                '"videos"',
                "an object mapping video ids to objects",
            )
            for vid, entry in videos.items():
                where = f"videos[{vid!r}]"
                require_type(entry, dict, meta_path, where, '{"objects": {...}}')
                objects = require_type(
                    entry.get("objects", {}), dict, meta_path, f"{where}.objects", "an object"
                )
                for obj_id, obj in objects.items():
                    require_type(obj, dict, meta_path, f"{where}.objects[{obj_id!r}]", "an object")
            self.objects_meta = videos

    def _meta_path(self, split: str) -> Path:
        return self.root / "meta_expressions" / split / "meta_expressions.json"

    def _meta_expressions(self, split: str) -> dict:
        path = self._meta_path(split)
        meta = load_json(path, META_EXPECTED)
        self.note_metadata(path)
        videos = require_type(
            meta.get("videos") if isinstance(meta, dict) else None,
            dict,
            path,
            '"videos"',
            "an object mapping video ids to entries",
        )
        for vid, entry in videos.items():
            require_type(
                entry, dict, path, f"videos[{vid!r}]", '{"expressions": {...}, "frames": [...]}'
            )
            require_type(
                entry.get("expressions"), dict, path, f"videos[{vid!r}].expressions", "an object"
            )
            require_type(
                entry.get("frames"), list, path, f"videos[{vid!r}].frames", "a list of frame names"
            )
        return videos

    def video_ids(self) -> list[str]:
        return sorted(self.videos)

    def fingerprint_paths(self) -> list[Path]:
        paths = [self.image_dir / v for v in self.video_ids()]
        if self.split == "train":
            paths += [self.mask_dir / v for v in self.video_ids()]
        return paths

    def load_video(self, video: str) -> LoadResult:
        entry = self.videos[video]
        meta_path = self._meta_path(self.split)
        quarantined: list[QuarantineItem] = []
        expressions: list[Expression] = []
        exps: DupDict = entry["expressions"]
        for exp_id in getattr(exps, "duplicates", []):
            quarantined.append(
                self.quarantine(
                    "duplicate_id",
                    "expression",
                    meta_path,
                    f"expression id {exp_id} repeated; the first is kept",
                    video=video,
                    exp_id=exp_id,
                )
            )
        for exp_id in sorted(exps, key=natural_key):
            item = exps[exp_id]
            text = item.get("exp") if isinstance(item, dict) else None
            bad = check_text(self, text, meta_path, video, exp_id)
            if bad:
                quarantined.append(bad)
                continue
            obj = item.get("obj_id")
            expressions.append(Expression(exp_id, text, [] if obj is None else [str(obj)]))
        names = [str(n) for n in entry["frames"]]
        paths = [self.image_dir / video / f"{n}.jpg" for n in names]
        loaded = self.read_frames(video, names, paths)
        if isinstance(loaded, QuarantineItem):
            return LoadResult(None, [loaded, *quarantined])
        frames, size = loaded
        obj_ids = sorted({i for e in expressions for i in e.obj_ids}, key=natural_key)
        mask_paths: list[Path] = []
        if self.split != "train":
            objects = [ObjectTrack(i, None, None) for i in obj_ids]
        else:
            meta_objects = self.objects_meta.get(video, {}).get("objects", {}) or {}
            obj_ids = sorted(set(obj_ids) | {str(i) for i in meta_objects}, key=natural_key)
            read = self.read_label_maps(self.mask_dir, video, names, size)
            if isinstance(read, QuarantineItem):
                return LoadResult(None, [*quarantined, read])
            mask_paths, label_maps = read
            objects = [
                ObjectTrack(
                    i,
                    (meta_objects.get(i) or {}).get("category"),
                    encode_label(label_maps, _label(i)),
                )
                for i in obj_ids
            ]
        return self.assemble(
            video=video,
            names=names,
            paths=paths,
            frames=frames,
            size=size,
            objects=objects,
            expressions=expressions,
            quarantined=quarantined,
            mask_paths=mask_paths,
        )


def _label(obj_id: str) -> int:
    return int(obj_id) if obj_id.isdigit() else -1
