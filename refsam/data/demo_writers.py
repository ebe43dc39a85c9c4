"""Writers of the demo plan in the published raw layouts (DATA.md), one function per format.

Each writer renders the scenes of its dataset and writes files exactly where and how the
published dataset has them, plus the held-out ground truth of splits whose public release
has none (under ``<out>/heldout/``, outside the raw layouts). Output is deterministic:
sorted keys where the format has maps, fixed encoder settings, no timestamps.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from refsam.data.demo_language import Expression
from refsam.data.demo_scenes import SHAPES, Scene, render_frame

JPEG_QUALITY = 90
VOID = 255
DAVIS_RENAMES = {"classic-car": "clasic-car"}  # names as (mis)spelt in the text annotations
CATEGORY_IDS = {shape: i + 1 for i, shape in enumerate(SHAPES)}


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


def _progress(items: list[Any], desc: str) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit="video", disable=None, leave=False)


def _render(scene: Scene, frame_dir: Path, frame_names: list[str]) -> list[np.ndarray]:
    """Write the scene's frames as JPEGs named ``frame_names``; return the label maps."""
    labels = []
    for t, name in enumerate(frame_names):
        rgb, lab = render_frame(scene, t)
        save_jpeg(frame_dir / f"{name}.jpg", rgb)
        labels.append(lab)
    return labels


def _ytvos_objects(scene: Scene, frame_names: list[str], labels: list[np.ndarray]) -> dict:
    objects = {}
    for obj in scene.objects:
        present = [
            n for n, lab in zip(frame_names, labels, strict=True) if (lab == obj.obj_id).any()
        ]
        objects[str(obj.obj_id)] = {"category": obj.shape, "frames": present}
    return objects


def _ytvos_expressions(expressions: list[Expression], *, with_obj: bool) -> dict:
    out = {}
    for e in expressions:
        entry = {"exp": e.text}
        if with_obj:
            entry["obj_id"] = str(e.obj_ids[0])
        out[e.exp_id] = entry
    return out


def write_ytvos(root: Path, heldout: Path, videos: dict[str, list]) -> None:
    """Ref-YouTube-VOS: train with masks; valid + test frames in ``valid/JPEGImages``.

    ``videos`` maps split (train, valid, test) to its VideoPlans. ``valid`` meta lists the
    valid and test videos (as published); test meta lists the test videos only. Held-out
    masks of both go to ``heldout/valid`` in the train format.
    """
    train_meta: dict[str, Any] = {}
    train_exps: dict[str, Any] = {}
    for video in _progress(videos["train"], "ref-youtube-vos train"):
        name, frames = video.scene.name, video.frame_names
        labels = _render(video.scene, root / "train/JPEGImages" / name, frames)
        for frame, lab in zip(frames, labels, strict=True):
            save_palette_png(root / "train/Annotations" / name / f"{frame}.png", lab)
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
    for video in _progress(evaluation, "ref-youtube-vos valid+test"):
        name, frames = video.scene.name, video.frame_names
        labels = _render(video.scene, root / "valid/JPEGImages" / name, frames)
        for frame, lab in zip(frames, labels, strict=True):
            save_palette_png(heldout / "valid/Annotations" / name / f"{frame}.png", lab)
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


def write_davis(root: Path, videos: dict[str, list]) -> None:
    """Ref-DAVIS17: DAVIS 2017 480p layout, ImageSets, and the four text annotation files."""
    lines: dict[int, list[str]] = {s: [] for _, s, _ in _DAVIS_TEXT_FILES}
    for split, image_set in (("train", "train"), ("valid", "val")):
        names = []
        for video in _progress(videos[split], f"ref-davis {split}"):
            name, frames = video.scene.name, video.frame_names
            labels = _render(video.scene, root / "DAVIS/JPEGImages/480p" / name, frames)
            for frame, lab in zip(frames, labels, strict=True):
                path = root / "DAVIS/Annotations_unsupervised/480p" / name / f"{frame}.png"
                save_palette_png(path, davis_annotation(lab))
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


def write_mevis(root: Path, heldout: Path, videos: dict[str, list]) -> None:
    """MeViS: train / valid_u with mask_dict.json, valid without (held-out copy aside)."""
    for split, plans in videos.items():
        metas: dict[str, Any] = {}
        held_metas: dict[str, Any] = {}
        masks: dict[str, Any] = {}
        next_anno = 0
        for video in _progress(plans, f"mevis {split}"):
            name, frames = video.scene.name, video.frame_names
            labels = _render(video.scene, root / split / "JPEGImages" / name, frames)
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


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of an H×W mask (column-major runs, zeros first)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = [int(r) for r in np.diff(bounds)]
    return [0, *runs] if flat[0] else runs


_POLY_UPSAMPLE = 4


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of ``mask`` as COCO polygons (flat x, y lists; ≥ 3 points each).

    Traced on a 4× nearest-upsampled mask so the polygons follow pixel edges: pycocotools
    decodes them back to exactly ``mask`` (holes aside).
    """
    big = np.kron(mask.astype(np.uint8), np.ones((_POLY_UPSAMPLE, _POLY_UPSAMPLE), np.uint8))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [
        [(float(v) + 0.5) / _POLY_UPSAMPLE for v in contour.reshape(-1)]
        for contour in contours
        if len(contour) >= 3
    ]


def _annotation(ann_id: int, image_id: int, obj: Any, mask: np.ndarray) -> dict[str, Any]:
    """One COCO annotation; every third one stores (uncompressed) RLE instead of polygons."""
    ys, xs = np.nonzero(mask)
    bbox = [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]
    polys = _polygons(mask)
    if ann_id % 3 == 0 or not polys:
        h, w = mask.shape
        segmentation: Any = {"size": [h, w], "counts": uncompressed_rle(mask)}
    else:
        segmentation = polys
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_IDS[obj.shape],
        "segmentation": segmentation,
        "area": float(mask.sum()),
        "bbox": bbox,
        "iscrowd": 0,
    }


def write_coco(root: Path, images: list, families: dict[str, list]) -> None:
    """COCO train2014 images plus ``refcoco*/refs(*).p`` and ``instances.json`` per family.

    ``images`` are ImagePlans (image_id, scene, ann_ids); ``families`` maps a family name to
    its RefPlans. Each instances.json holds the images its refs use and all their objects.
    """
    annotations: dict[int, list[dict[str, Any]]] = {}
    image_entries: dict[int, dict[str, Any]] = {}
    for image in _progress(images, "coco train2014"):
        file_name = f"COCO_train2014_{image.image_id:012d}.jpg"
        rgb, labels = render_frame(image.scene, 0)
        save_jpeg(root / "train2014" / file_name, rgb)
        image_entries[image.image_id] = {
            "id": image.image_id,
            "file_name": file_name,
            "height": image.scene.height,
            "width": image.scene.width,
        }
        annotations[image.image_id] = [
            _annotation(image.ann_ids[o.obj_id], image.image_id, o, labels == o.obj_id)
            for o in image.scene.objects
        ]
    categories = [{"id": i, "name": s, "supercategory": "shape"} for s, i in CATEGORY_IDS.items()]
    for family, refs in families.items():
        used = sorted({r.image_id for r in refs})
        instances = {
            "images": [image_entries[i] for i in used],
            "annotations": [a for i in used for a in annotations[i]],
            "categories": categories,
        }
        folder = root / family
        save_json(folder / "instances.json", instances)
        records = [_ref_record(r) for r in refs]
        refs_name = "refs(umd).p" if family == "refcocog" else "refs(unc).p"
        (folder / refs_name).write_bytes(pickle.dumps(records, protocol=2))


def _ref_record(ref: Any) -> dict[str, Any]:
    sentences = []
    for e in ref.sentences:
        raw = e.text[0].upper() + e.text[1:] + "."
        sentences.append(
            {"tokens": e.text.split(), "raw": raw, "sent_id": int(e.exp_id), "sent": e.text}
        )
    return {
        "sent_ids": [s["sent_id"] for s in sentences],
        "file_name": f"COCO_train2014_{ref.image_id:012d}_{ref.ann_id}.jpg",
        "ann_id": ref.ann_id,
        "ref_id": ref.ref_id,
        "image_id": ref.image_id,
        "split": ref.split,
        "sentences": sentences,
        "category_id": ref.category_id,
    }
