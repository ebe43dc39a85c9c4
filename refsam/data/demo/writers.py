"""Writers of the demo plan in the published raw layouts (DATA.md), one function per format.

Each writer renders the scenes of its dataset and writes files exactly where and how the
published dataset has them, plus the held-out ground truth of splits whose public release
has none and the expression subsets of every split (under ``<out>/heldout/``, outside the
raw layouts: nothing a model or ``refsam ingest`` reads). Output is deterministic:
sorted keys where the format has maps, fixed encoder settings, no timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from refsam.data.demo.language import SceneExpression, expression_subset
from refsam.data.demo.scenes import Scene, render_frame

JPEG_QUALITY = 90
VOID = 255
DAVIS_RENAMES = {"classic-car": "clasic-car"}  # names as (mis)spelt in the text annotations


def palette() -> list[int]:
    """The DAVIS / PASCAL VOC palette (768 ints); index 255 (void) is (224, 224, 192)."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours += [r, g, b]
    return colours


_PALETTE = palette()


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write an H×W×3 uint8 RGB frame as a baseline JPEG (quality 90)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=JPEG_QUALITY)


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    """Write an H×W uint8 id map as a palette ("P") PNG with the DAVIS palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels)
    image.putpalette(_PALETTE)
    image.save(path, format="PNG")


def save_json(path: Path, obj: Any) -> None:
    """Write JSON as UTF-8 (keys in insertion order: callers insert them sorted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of an H×W bool mask: ``{"size": [h, w], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# ``map``-like: applies a module-level function to every item, results in item order. The
# writers render through it, so the caller chooses serial (``map``) or a process pool.
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


def progress(results: Iterable[Any], total: int, desc: str, unit: str = "video") -> Iterator[Any]:
    return iter(tqdm(results, total=total, desc=desc, unit=unit, disable=None, leave=False))


def ready() -> bool:
    """A no-op job: sent first so that worker processes import this module early."""
    return True


@dataclass(frozen=True)
class RenderJob:
    """One video to render: frames as JPEGs into ``frame_dir`` and, with ``annotation_dir``,
    its id maps as palette PNGs there (DAVIS style with the void band when ``davis_void``)."""

    scene: Scene
    frame_dir: Path
    frame_names: list[str]
    annotation_dir: Path | None = None
    davis_void: bool = False


def render_video(job: RenderJob) -> list[np.ndarray]:
    """Write one video's frames (and annotation PNGs); return its label maps (T × H×W)."""
    labels = []
    for t, name in enumerate(job.frame_names):
        rgb, lab = render_frame(job.scene, t)
        save_jpeg(job.frame_dir / f"{name}.jpg", rgb)
        if job.annotation_dir is not None:
            annotation = davis_annotation(lab) if job.davis_void else lab
            save_palette_png(job.annotation_dir / f"{name}.png", annotation)
        labels.append(lab)
    return labels


def _rendered(
    mapper: Mapper,
    videos: list[Any],
    frames_root: Path,
    desc: str,
    annotations_root: Path | None = None,
    *,
    davis_void: bool = False,
) -> Iterator[tuple[Any, list[np.ndarray]]]:
    """Render ``videos`` (VideoPlans) into ``frames_root/<name>/`` (annotation PNGs into
    ``annotations_root/<name>/``); yields (video, its label maps) in order."""
    jobs = [
        RenderJob(
            v.scene,
            frames_root / v.scene.name,
            v.frame_names,
            None if annotations_root is None else annotations_root / v.scene.name,
            davis_void,
        )
        for v in videos
    ]
    return zip(videos, progress(mapper(render_video, jobs), len(jobs), desc), strict=True)


def _ytvos_objects(scene: Scene, frame_names: list[str], labels: list[np.ndarray]) -> dict:
    objects = {}
    for obj in scene.objects:
        present = [
            n for n, lab in zip(frame_names, labels, strict=True) if (lab == obj.obj_id).any()
        ]
        objects[str(obj.obj_id)] = {"category": obj.shape, "frames": present}
    return objects


def _ytvos_expressions(expressions: list[SceneExpression], *, with_obj: bool) -> dict:
    out = {}
    for e in expressions:
        entry = {"exp": e.text}
        if with_obj:
            entry["obj_id"] = str(e.obj_ids[0])
        out[e.exp_id] = entry
    return out


def write_ytvos(root: Path, heldout: Path, videos: dict[str, list], mapper: Mapper = map) -> None:
    """Ref-YouTube-VOS: train with masks; valid + test frames in ``valid/JPEGImages``.

    ``videos`` maps split (train, valid, test) to its VideoPlans. ``valid`` meta lists the
    valid and test videos (as published); test meta lists the test videos only. Held-out
    masks of both go to ``heldout/valid`` in the train format.
    """
    train_meta: dict[str, Any] = {}
    train_exps: dict[str, Any] = {}
    rendered = _rendered(
        mapper,
        videos["train"],
        root / "train/JPEGImages",
        "ref-youtube-vos train",
        root / "train/Annotations",
    )
    for video, labels in rendered:
        name, frames = video.scene.name, video.frame_names
        train_meta[name] = {"objects": _ytvos_objects(video.scene, frames, labels)}
        train_exps[name] = {
            "expressions": _ytvos_expressions(video.expressions, with_obj=True),
            "frames": frames,
        }
    save_json(root / "train/meta.json", {"videos": train_meta})
    save_json(root / "meta_expressions/train/meta_expressions.json", {"videos": train_exps})

    held_meta: dict[str, Any] = {}
    held_exps: dict[str, Any] = {}
    public: dict[str, dict[str, Any]] = {"valid": {}, "test": {}}
    evaluation = sorted(videos["valid"] + videos["test"], key=lambda v: v.scene.name)
    test_names = {v.scene.name for v in videos["test"]}
    rendered = _rendered(
        mapper,
        evaluation,
        root / "valid/JPEGImages",
        "ref-youtube-vos valid+test",
        heldout / "valid/Annotations",
    )
    for video, labels in rendered:
        name, frames = video.scene.name, video.frame_names
        held_meta[name] = {"objects": _ytvos_objects(video.scene, frames, labels)}
        entry = {
            "expressions": _ytvos_expressions(video.expressions, with_obj=False),
            "frames": frames,
        }
        public["valid"][name] = entry
        if name in test_names:
            public["test"][name] = entry
        held_exps[name] = {
            "expressions": _ytvos_expressions(video.expressions, with_obj=True),
            "frames": frames,
        }
    for split in ("valid", "test"):
        save_json(
            root / f"meta_expressions/{split}/meta_expressions.json", {"videos": public[split]}
        )
    save_json(heldout / "valid/meta.json", {"videos": held_meta})
    save_json(heldout / "valid/meta_expressions.json", {"videos": held_exps})


def davis_annotation(labels: np.ndarray) -> np.ndarray:
    """DAVIS-style mask: object ids plus a one-pixel void (255) band around every object."""
    foreground = (labels > 0).astype(np.uint8)
    band = cv2.dilate(foreground, np.ones((3, 3), np.uint8)).astype(bool) & (foreground == 0)
    out = labels.copy()
    out[band] = VOID
    return out


_DAVIS_TEXT_FILES = (  # (file name, annotation_set, encoding)
    ("Davis17_annot1.txt", 0, "utf-8"),
    ("Davis17_annot1_full_video.txt", 1, "utf-8"),
    ("Davis17_annot2.txt", 2, "latin-1"),
    ("Davis17_annot2_full_video.txt", 3, "latin-1"),
)


def write_davis(root: Path, videos: dict[str, list], mapper: Mapper = map) -> None:
    """Ref-DAVIS17: DAVIS 2017 480p layout, ImageSets, and the four text annotation files."""
    lines: dict[int, list[str]] = {s: [] for _, s, _ in _DAVIS_TEXT_FILES}
    for split, image_set in (("train", "train"), ("valid", "val")):
        names = []
        rendered = _rendered(
            mapper,
            videos[split],
            root / "DAVIS/JPEGImages/480p",
            f"ref-davis {split}",
            root / "DAVIS/Annotations_unsupervised/480p",
            davis_void=True,
        )
        for video, _ in rendered:
            name = video.scene.name
            names.append(name)
            text_name = DAVIS_RENAMES.get(name, name)
            for e in video.expressions:
                lines[e.annotation_set].append(f'{text_name} {e.obj_ids[0]} "{e.text}"\n')
        image_sets = root / "DAVIS/ImageSets/2017"
        image_sets.mkdir(parents=True, exist_ok=True)
        (image_sets / f"{image_set}.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    text_dir = root / "davis_text_annotations"
    text_dir.mkdir(parents=True, exist_ok=True)
    for file_name, annotation_set, encoding in _DAVIS_TEXT_FILES:
        (text_dir / file_name).write_bytes("".join(sorted(lines[annotation_set])).encode(encoding))


def _mevis_expressions(video: Any, anno_ids: dict[int, int], *, with_ids: bool) -> dict:
    out = {}
    for e in video.expressions:
        entry: dict[str, Any] = {"exp": e.text}
        if with_ids:
            entry["obj_id"] = [i - 1 for i in e.obj_ids]  # MeViS object ids start at 0
            entry["anno_id"] = [anno_ids[i] for i in e.obj_ids]
        out[e.exp_id] = entry
    return out


def write_mevis(root: Path, heldout: Path, videos: dict[str, list], mapper: Mapper = map) -> None:
    """MeViS: train / valid_u with mask_dict.json, valid without (held-out copy aside)."""
    for split, plans in videos.items():
        metas: dict[str, Any] = {}
        held_metas: dict[str, Any] = {}
        masks: dict[str, Any] = {}
        next_anno = 0
        rendered = _rendered(mapper, plans, root / split / "JPEGImages", f"mevis {split}")
        for video, labels in rendered:
            name, frames = video.scene.name, video.frame_names
            anno_ids = {}
            for obj in video.scene.objects:
                anno_ids[obj.obj_id] = next_anno
                masks[str(next_anno)] = [
                    encode_rle(lab == obj.obj_id) if (lab == obj.obj_id).any() else None
                    for lab in labels
                ]
                next_anno += 1
            public = split != "valid"
            metas[name] = {
                "expressions": _mevis_expressions(video, anno_ids, with_ids=public),
                "frames": frames,
            }
            held_metas[name] = {
                "expressions": _mevis_expressions(video, anno_ids, with_ids=True),
                "frames": frames,
            }
        save_json(root / split / "meta_expressions.json", {"videos": metas})
        if split == "valid":
            save_json(heldout / "valid/mask_dict.json", masks)
            save_json(heldout / "valid/meta_expressions.json", {"videos": held_metas})
        else:
            save_json(root / split / "mask_dict.json", masks)


SUBSETS_FILE = "subsets.json"


def write_subsets(heldout: Path, videos: dict[str, list]) -> None:
    """``heldout/<split>/subsets.json``: ``{video: {exp_id: "appearance" | "motion"}}`` for
    the VideoPlans of each split (:func:`~refsam.data.demo.language.expression_subset`);
    the evaluator reports J&F per subset from it (INTERFACES.md)."""
    for split, plans in videos.items():
        subsets = {
            v.scene.name: {e.exp_id: expression_subset(v.scene, e) for e in v.expressions}
            for v in sorted(plans, key=lambda v: v.scene.name)
        }
        save_json(heldout / split / SUBSETS_FILE, subsets)
