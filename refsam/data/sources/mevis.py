"""MeViS reader: ``train``/``valid_u`` with ``mask_dict.json`` (COCO RLE or null per frame
position, one list per anno_id), ``valid`` without masks. Expressions refer to several
objects; an expression's target is the union of its ``anno_id`` masks. Objects are keyed
by anno_id."""

from __future__ import annotations

from pathlib import Path

from refsam.data.rle import normalize_rle, rle_area
from refsam.data.sources import register
from refsam.data.sources.base import LoadResult, Source, check_text
from refsam.data.sources.raw_files import DupDict, load_json, natural_key, require_dir, require_type
from refsam.data.types import Expression, ObjectTrack, QuarantineItem

META_EXPECTED = (
    '{"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": [int], "anno_id": [int]}}, '
    '"frames": [str]}}}'
)


@register
class MeViS(Source):
    name = "mevis"
    raw_dir = "mevis"
    splits = ("train", "valid_u", "valid")
    masked_splits = ("train", "valid_u")

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        split_dir = require_dir(self.root / split, f"<root>/{split}/")
        self.image_dir = require_dir(split_dir / "JPEGImages", f"<root>/{split}/JPEGImages/<vid>/")
        self.meta_path = split_dir / "meta_expressions.json"
        meta = load_json(self.meta_path, META_EXPECTED)
        self.note_metadata(self.meta_path)
        self.videos = require_type(
            meta.get("videos") if isinstance(meta, dict) else None,
            dict,
            self.meta_path,
            '"videos"',
            "an object mapping video ids to entries",
        )
        for vid, entry in self.videos.items():
            require_type(
                entry, dict, self.meta_path, f"videos[{vid!r}]", '{"expressions", "frames"}'
            )
            require_type(
                entry.get("expressions"),
                dict,
                self.meta_path,
                f"videos[{vid!r}].expressions",
                "an object",
            )
            require_type(
                entry.get("frames"), list, self.meta_path, f"videos[{vid!r}].frames", "a list"
            )
        self.mask_dict: dict = {}
        if self.has_masks:
            self.mask_path = split_dir / "mask_dict.json"
            mask_dict = load_json(self.mask_path, '{"<anno_id>": [COCO RLE or null per frame]}')
            self.note_metadata(self.mask_path)
            self.mask_dict = require_type(
                mask_dict, dict, self.mask_path, "the top level", "an object"
            )

    def video_ids(self) -> list[str]:
        return sorted(self.videos)

    def fingerprint_paths(self) -> list[Path]:
        return [self.image_dir / v for v in self.video_ids()]

    def load_video(self, video: str) -> LoadResult:
        entry = self.videos[video]
        quarantined: list[QuarantineItem] = []
        exps: DupDict = entry["expressions"]
        for exp_id in getattr(exps, "duplicates", []):
            quarantined.append(
                self.quarantine(
                    "duplicate_id",
                    "expression",
                    self.meta_path,
                    f"expression id {exp_id} repeated; the first is kept",
                    video=video,
                    exp_id=exp_id,
                )
            )
        expressions: list[Expression] = []
        anno_of_obj: dict[str, str] = {}
        for exp_id in sorted(exps, key=natural_key):
            item = exps[exp_id]
            text = item.get("exp") if isinstance(item, dict) else None
            bad = check_text(self, text, self.meta_path, video, exp_id)
            if bad:
                quarantined.append(bad)
                continue
            objs, annos = item.get("obj_id"), item.get("anno_id")
            if not self.has_masks and annos is None and objs is None:
                expressions.append(Expression(exp_id, text, []))  # server split: ids withheld
                continue
            if not self.has_masks and annos is None:
                annos = objs
            if (
                not isinstance(annos, list)
                or not annos
                or (objs is not None and (not isinstance(objs, list) or len(objs) != len(annos)))
            ):
                quarantined.append(
                    self.quarantine(
                        "bad_expression",
                        "expression",
                        self.meta_path,
                        "expected non-empty lists obj_id and anno_id of equal length",
                        video=video,
                        exp_id=exp_id,
                    )
                )
                continue
            for obj, anno in zip(objs or annos, annos, strict=True):
                anno_of_obj.setdefault(str(anno), str(obj))
            expressions.append(
                Expression(exp_id, text, sorted({str(a) for a in annos}, key=natural_key))
            )
        names = [str(n) for n in entry["frames"]]
        paths = [self.image_dir / video / f"{n}.jpg" for n in names]
        loaded = self.read_frames(video, names, paths)
        if isinstance(loaded, QuarantineItem):
            return LoadResult(None, [loaded, *quarantined])
        frames, size = loaded
        anno_ids = sorted({a for e in expressions for a in e.obj_ids}, key=natural_key)
        objects: list[ObjectTrack] = []
        for anno in anno_ids:
            if not self.has_masks:
                objects.append(ObjectTrack(anno, None, None))
                continue
            masks = self._masks(video, anno, len(names), size, quarantined)
            if masks is not None:
                objects.append(ObjectTrack(anno, None, masks))
        return self.assemble(
            video=video,
            names=names,
            paths=paths,
            frames=frames,
            size=size,
            objects=objects,
            expressions=expressions,
            quarantined=quarantined,
        )

    def _masks(
        self,
        video: str,
        anno: str,
        n_frames: int,
        size: tuple[int, int],
        quarantined: list[QuarantineItem],
    ) -> list | None:
        def bad(reason: str, message: str) -> None:
            quarantined.append(
                self.quarantine(reason, "object", self.mask_path, message, video=video, obj_id=anno)
            )

        rles = self.mask_dict.get(anno)
        if rles is None:
            bad("missing_mask", f"anno_id {anno} has no entry in mask_dict.json")
            return None
        if not isinstance(rles, list) or len(rles) != n_frames:
            got = len(rles) if isinstance(rles, list) else type(rles).__name__
            bad("bad_mask", f"anno_id {anno}: expected a list of {n_frames} RLEs/nulls, got {got}")
            return None
        masks = []
        for index, rle in enumerate(rles):
            if rle is None:
                masks.append(None)
                continue
            try:
                normal = normalize_rle(rle, *size)
                masks.append(normal if rle_area(normal) else None)
            except ValueError as exc:
                reason = "rle_size" if "size" in str(exc) else "bad_mask"
                bad(reason, f"anno_id {anno}, frame position {index}: {exc}")
                return None
        return masks
