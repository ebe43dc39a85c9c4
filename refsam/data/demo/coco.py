"""The COCO part of the demo data: train2014 images, ``instances.json`` and the
``refs(*).p`` of RefCOCO, RefCOCO+ (unc) and RefCOCOg (umd), as published (DATA.md)."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refsam.data.demo.scenes import SHAPES, render_frame
from refsam.data.demo.writers import Mapper, progress, save_jpeg, save_json

CATEGORY_IDS = {shape: i + 1 for i, shape in enumerate(SHAPES)}


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
    big = np.repeat(np.repeat(mask.astype(np.uint8), _POLY_UPSAMPLE, 0), _POLY_UPSAMPLE, 1)
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


def coco_image(root: Path, image: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write one COCO train2014 image; return its ``images`` entry and its annotations."""
    file_name = f"COCO_train2014_{image.image_id:012d}.jpg"
    rgb, labels = render_frame(image.scene, 0)
    save_jpeg(root / "train2014" / file_name, rgb)
    entry = {
        "id": image.image_id,
        "file_name": file_name,
        "height": image.scene.height,
        "width": image.scene.width,
    }
    annotations = [
        _annotation(image.ann_ids[o.obj_id], image.image_id, o, labels == o.obj_id)
        for o in image.scene.objects
    ]
    return entry, annotations


def write_coco(root: Path, images: list, families: dict[str, list], mapper: Mapper = map) -> None:
    """COCO train2014 images plus ``refcoco*/refs(*).p`` and ``instances.json`` per family.

    ``images`` are ImagePlans (image_id, scene, ann_ids); ``families`` maps a family name to
    its RefPlans. Each instances.json holds the images its refs use and all their objects.
    """
    annotations: dict[int, list[dict[str, Any]]] = {}
    image_entries: dict[int, dict[str, Any]] = {}
    written = mapper(partial(coco_image, root), images)
    for entry, image_annotations in progress(written, len(images), "coco train2014", "image"):
        image_entries[entry["id"]] = entry
        annotations[entry["id"]] = image_annotations
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
