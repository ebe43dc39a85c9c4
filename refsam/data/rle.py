"""COCO RLE helpers: the one mask representation of our shards (DATA.md).

Masks are stored as compressed COCO RLE ``{"size": [h, w], "counts": str}`` (pycocotools),
``None`` meaning "absent in this frame".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict[str, Any]


def encode_mask(mask: np.ndarray) -> RLE:
    """H×W bool/0-1 mask → compressed RLE with ``counts`` as str."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


def encode_label(label_maps: list[np.ndarray], value: int) -> list[RLE | None]:
    """Per frame, the RLE of ``label map == value`` (None where the value is absent)."""
    masks: list[RLE | None] = []
    for labels in label_maps:
        binary = labels == value
        masks.append(encode_mask(binary) if binary.any() else None)
    return masks


def decode_rle(rle: RLE | None, height: int, width: int) -> np.ndarray:
    """RLE (or None) → H×W bool mask (all False for None)."""
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    counts = rle["counts"]
    coded = {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(coded).astype(bool)


def normalize_rle(rle: Any, height: int, width: int) -> RLE:
    """Validate a COCO RLE (compressed or uncompressed) of an H×W frame; return it compressed.

    Raises ValueError (message says what is wrong) for a wrong size or undecodable counts,
    whatever the JSON holds (nested lists, negative or non-integer counts, …).
    """
    try:
        return _normalize_rle(rle, height, width)
    except (TypeError, OverflowError, MemoryError) as exc:
        raise ValueError(f"malformed RLE ({type(exc).__name__}: {exc})") from None


def _normalize_rle(rle: Any, height: int, width: int) -> RLE:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(
            f"expected a COCO RLE dict with 'size' and 'counts', got {type(rle).__name__}"
        )
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or [int(s) for s in size] != [height, width]
    ):
        raise ValueError(f"RLE size {size} does not match the frame size [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts):
            raise ValueError("uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise ValueError(
                f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}"
            )
        coded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str | bytes):
        coded = {
            "size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    else:
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    try:
        area = int(mask_utils.area(coded))
        decoded = mask_utils.decode(coded)
    except Exception as exc:  # pycocotools raises bare Exception/ValueError on bad counts
        raise ValueError(f"undecodable RLE counts: {exc}") from exc
    if decoded.shape != (height, width) or int(decoded.sum()) != area:
        raise ValueError("RLE counts do not cover the frame")
    return {"size": [height, width], "counts": coded["counts"].decode("ascii")}


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> RLE:
    """COCO polygon segmentation (list of flat x,y lists) → compressed RLE of the union."""
    if (
        not isinstance(polygons, list)
        or not polygons
        or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in polygons)
    ):
        raise ValueError("expected polygons as flat [x1, y1, x2, y2, ...] lists of ≥ 3 points")
    for polygon in polygons:
        # pycocotools allocates in proportion to the edge lengths: a coordinate like 1e18
        # would exhaust memory, so anything far outside the image is refused
        for index, value in enumerate(polygon):
            limit = width if index % 2 == 0 else height
            if (
                type(value) not in (int, float)
                or not math.isfinite(value)
                or not -limit <= value <= 2 * limit
            ):
                raise ValueError(
                    f"polygon coordinate {value!r} is not a number within the image "
                    f"({width}×{height}, with a margin)"
                )
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"size": [height, width], "counts": merged["counts"].decode("ascii")}


def rle_area(rle: RLE) -> int:
    """Number of foreground pixels of a compressed RLE."""
    counts = rle["counts"]
    coded = {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return int(mask_utils.area(coded))
