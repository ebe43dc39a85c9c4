"""Explicit decoders for our shard members (never webdataset's defaults: they unpickle)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8"


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → H×W×3 uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def check_jpeg(data: bytes) -> tuple[int, int]:
    """Fully parse a JPEG (fast: DCT-scaled decode) and return (height, width).

    Raises ValueError when the bytes are not a complete, decodable JPEG (e.g. truncated).
    """
    if not data.startswith(JPEG_MAGIC):
        raise ValueError("not a JPEG file (missing FFD8 start marker)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise ValueError(f"expected a JPEG, got {image.format}")
            width, height = image.size
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable JPEG: {exc}") from exc
    return height, width


def decode_json(data: bytes) -> dict[str, Any]:
    """The ``json`` member of a sample."""
    return json.loads(data.decode("utf-8"))
