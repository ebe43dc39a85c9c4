"""RefCOCO / RefCOCO+ / RefCOCOg (umd) reader. The raw root is the COCO root holding
``train2014/`` and ``<dataset>/{refs(unc|umd).p, instances.json}``. An image is a 1-frame
video keyed by its image id; each sentence is one expression (exp_id = sent_id)."""

from __future__ import annotations

import io
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from refsam.data.rle import normalize_rle, polygons_to_rle, rle_area
from refsam.data.sources import register
from refsam.data.sources.base import LoadResult, Source
from refsam.data.sources.raw_files import load_json, require_dir, require_type
from refsam.data.types import Expression, ObjectTrack, QuarantineItem
from refsam.errors import DataError

PLAIN = (list, dict, str, int, float, bool, type(None))


class _RefusingUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: classes, functions and ``__reduce__`` payloads
    need one, so nothing but plain containers and scalars can be built."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def load_refs(path: Path) -> list[dict[str, Any]]:
    """Safely load a ``refs(*).p`` pickle: only lists/dicts/strings/numbers, never code."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the refs pickle (list of ref dicts)")
    try:
        refs = _RefusingUnpickler(io.BytesIO(path.read_bytes()), encoding="utf-8").load()
    except Exception as exc:  # noqa: BLE001 - any parse failure of a malformed pickle
        # (no global can be loaded, so no code ran; a corrupt stream raises anything from
        # UnpicklingError to AttributeError, TypeError, MemoryError or struct.error)
        raise DataError(
            f"{path}: not a plain refs pickle ({exc}); expected a list of dicts of "
            "lists/dicts/strings/numbers only"
        ) from exc
    _check_plain(refs, path, "refs")
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(
            f"{path}: top level is a {type(refs).__name__}; expected a list of ref dicts"
        )
    return refs


def _is_plain(value: Any) -> bool:
    """Whether ``value`` holds only :data:`PLAIN` types (the fast pass of
    :func:`_check_plain`: no location strings are built)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list or kind is dict:
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item)
            if kind is dict:
                stack.extend(item.values())
        elif kind not in PLAIN:
            return False
    return True


def _check_plain(value: Any, path: Path, where: str) -> None:
    """Iterative walk (no recursion limit) visiting each container once: a pickle can share
    a container many times or nest it in itself (memo references), which would otherwise
    take exponential time or loop forever. The location of the first offender is only
    traced when the fast pass finds one."""
    if _is_plain(value):
        return
    stack = [(value, where)]
    seen: set[int] = set()
    while stack:
        item, at = stack.pop()
        if isinstance(item, list | dict):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if type(item) not in PLAIN:
            raise DataError(
                f"{path}: {at} is a {type(item).__name__}; expected lists/dicts/strings/numbers"
            )
        if isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            stack.extend((k, f"{at} key") for k in item)
            stack.extend((v, f"{at}[{k!r}]") for k, v in item.items())


class _RefCOCOFamily(Source):
    raw_dir = "coco"
    refs_file: ClassVar[str] = "refs(unc).p"

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        self.image_dir = require_dir(
            self.root / "train2014", "<coco root>/train2014/ (COCO images)"
        )
        folder = require_dir(self.root / self.name, f"<coco root>/{self.name}/")
        self.refs_path = folder / self.refs_file
        refs = load_refs(self.refs_path)
        self.note_metadata(self.refs_path)
        self.instances_path = folder / "instances.json"
        instances = load_json(
            self.instances_path, '{"images": [...], "annotations": [...], "categories": [...]}'
        )
        self.note_metadata(self.instances_path)
        for key in ("images", "annotations", "categories"):
            require_type(
                instances.get(key) if isinstance(instances, dict) else None,
                list,
                self.instances_path,
                f'"{key}"',
                "a list",
            )
        try:
            self.images = {
                int(i["id"]): i for i in instances["images"] if isinstance(i, dict) and "id" in i
            }
            self.annotations: dict[int, dict] = {}
            for ann in instances["annotations"]:
                if isinstance(ann, dict) and "id" in ann:
                    self.annotations.setdefault(int(ann["id"]), ann)
            self.categories = {
                int(c["id"]): c.get("name")
                for c in instances["categories"]
                if isinstance(c, dict) and "id" in c
            }
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"{self.instances_path}: an image/annotation/category id is not an integer "
                f"({exc}); expected COCO instances"
            ) from None
        self.by_image: dict[str, list[dict]] = defaultdict(list)
        self._plan_refs(refs)

    def _plan_refs(self, refs: list[dict[str, Any]]) -> None:
        seen_refs: set[int] = set()
        seen_sents: set[int] = set()
        self.sentence_quarantine: dict[str, list[QuarantineItem]] = defaultdict(list)
        for index, ref in enumerate(refs):
            if ref.get("split") != self.split:
                continue
            where = f"{self.rel(self.refs_path)}[{index}]"
            try:
                ref_id, ann_id, image_id = (
                    int(ref["ref_id"]),
                    int(ref["ann_id"]),
                    int(ref["image_id"]),
                )
                sentences = list(ref["sentences"])
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                self.planning_quarantine.append(
                    self.quarantine(
                        "bad_expression",
                        "expression",
                        where,
                        f"ref lacks a valid ref_id/ann_id/image_id/sentences ({exc})",
                    )
                )
                continue
            video = str(image_id)
            if ref_id in seen_refs:
                self.sentence_quarantine[video].append(
                    self.quarantine(
                        "duplicate_id",
                        "expression",
                        where,
                        f"ref_id {ref_id} repeated; the first is kept",
                        video=video,
                    )
                )
                continue
            seen_refs.add(ref_id)
            kept = []
            for sentence in sentences:
                sent_id = sentence.get("sent_id") if isinstance(sentence, dict) else None
                if not isinstance(sent_id, int | str | None):
                    sent_id = repr(sent_id)  # unhashable junk: reported under its repr
                if sent_id in seen_sents:
                    self.sentence_quarantine[video].append(
                        self.quarantine(
                            "duplicate_id",
                            "expression",
                            where,
                            f"sent_id {sent_id} repeated; the first is kept",
                            video=video,
                            exp_id=str(sent_id),
                        )
                    )
                    continue
                seen_sents.add(sent_id)
                kept.append(sentence)
            self.by_image[video].append(
                {
                    "ann_id": ann_id,
                    "sentences": kept,
                    "where": where,
                    "category_id": ref.get("category_id"),
                }
            )

    def video_ids(self) -> list[str]:
        return sorted(self.by_image, key=int)

    def _file_name(self, image: dict) -> str | None:
        name = image.get("file_name")
        return name if isinstance(name, str) and name else None

    def fingerprint_paths(self) -> list[Path]:
        return [
            self.image_dir / name
            for v in self.video_ids()
            if int(v) in self.images and (name := self._file_name(self.images[int(v)]))
        ]

    def load_video(self, video: str) -> LoadResult:
        quarantined = list(self.sentence_quarantine.get(video, []))
        image = self.images.get(int(video))
        if image is None:
            return LoadResult(
                None,
                [
                    *quarantined,
                    self.quarantine(
                        "missing_frame",
                        "video",
                        self.instances_path,
                        f"image {video} is not in instances.json",
                        video=video,
                    ),
                ],
            )
        file_name = self._file_name(image)
        if file_name is None:
            return LoadResult(
                None,
                [
                    *quarantined,
                    self.quarantine(
                        "bad_frame",
                        "video",
                        self.instances_path,
                        f"image {video} has no file_name string in instances.json",
                        video=video,
                    ),
                ],
            )
        path = self.image_dir / file_name
        names = [Path(file_name).stem]
        loaded = self.read_frames(video, names, [path])
        if isinstance(loaded, QuarantineItem):
            return LoadResult(None, [loaded, *quarantined])
        frames, size = loaded
        if (image.get("height"), image.get("width")) != size:
            return LoadResult(
                None,
                [
                    *quarantined,
                    self.quarantine(
                        "frame_size",
                        "video",
                        path,
                        f"JPEG is {size[0]}×{size[1]}, instances.json says {image.get('height')}×{image.get('width')}",
                        video=video,
                    ),
                ],
            )
        objects: dict[str, ObjectTrack] = {}
        expressions: list[Expression] = []
        for ref in self.by_image[video]:
            obj_id = str(ref["ann_id"])
            if obj_id not in objects and not any(q.obj_id == obj_id for q in quarantined):
                track = self._object(video, ref, size, quarantined)
                if track is not None:
                    objects[obj_id] = track
            for sentence in ref["sentences"]:
                exp_id = str(sentence.get("sent_id")) if isinstance(sentence, dict) else "?"
                text = sentence.get("sent") if isinstance(sentence, dict) else None
                if not isinstance(text, str):
                    quarantined.append(
                        self.quarantine(
                            "bad_expression",
                            "expression",
                            ref["where"],
                            "sentence without a 'sent' string",
                            video=video,
                            exp_id=exp_id,
                        )
                    )
                elif not text.strip():
                    quarantined.append(
                        self.quarantine(
                            "empty_text",
                            "expression",
                            ref["where"],
                            "empty sentence",
                            video=video,
                            exp_id=exp_id,
                        )
                    )
                else:
                    expressions.append(Expression(exp_id, text, [obj_id]))
        expressions.sort(key=lambda e: int(e.exp_id) if e.exp_id.isdigit() else 1 << 62)
        ordered = [objects[k] for k in sorted(objects, key=int)]
        return self.assemble(
            video=video,
            names=names,
            paths=[path],
            frames=frames,
            size=size,
            objects=ordered,
            expressions=expressions,
            quarantined=quarantined,
        )

    def _object(
        self, video: str, ref: dict, size: tuple[int, int], quarantined: list[QuarantineItem]
    ) -> ObjectTrack | None:
        obj_id = str(ref["ann_id"])
        ann = self.annotations.get(ref["ann_id"])

        def bad(reason: str, message: str) -> None:
            quarantined.append(
                self.quarantine(
                    reason, "object", self.instances_path, message, video=video, obj_id=obj_id
                )
            )

        if ann is None:
            bad("missing_mask", f"annotation {obj_id} is not in instances.json")
            return None
        segmentation = ann.get("segmentation")
        try:
            if isinstance(segmentation, list):
                rle = polygons_to_rle(segmentation, *size)
            else:
                rle = normalize_rle(segmentation, *size)
        except (ValueError, TypeError) as exc:
            bad("rle_size" if "size" in str(exc) else "bad_mask", f"annotation {obj_id}: {exc}")
            return None
        category = self.categories.get(int(ann.get("category_id", -1)))
        return ObjectTrack(obj_id, category, [rle if rle_area(rle) else None])


@register
class RefCOCO(_RefCOCOFamily):
    name = "refcoco"
    splits = ("train", "val", "testA", "testB")
    masked_splits = splits


@register
class RefCOCOPlus(_RefCOCOFamily):
    name = "refcoco+"
    splits = ("train", "val", "testA", "testB")
    masked_splits = splits


@register
class RefCOCOg(_RefCOCOFamily):
    name = "refcocog"
    refs_file = "refs(umd).p"
    splits = ("train", "val", "test")
    masked_splits = splits
