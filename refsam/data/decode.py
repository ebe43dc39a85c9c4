"""Explicit decoders for our shard members (never webdataset's defaults: they unpickle)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8"
MAX_IMAGE_PIXELS = int(os.environ.get("REFSAM_MAX_IMAGE_PIXELS", 8192 * 8192))
"""Largest frame or mask (height × width) we decode: a bigger declared size is refused from
the header alone, before any pixel is decoded (decompression-bomb guard; 8192² covers 8K
video; override with the environment variable ``REFSAM_MAX_IMAGE_PIXELS``)."""


@contextlib.contextmanager
def open_image(data: bytes, what: str = "image") -> Iterator[Image.Image]:
    """``Image.open`` on bytes with the decompression-bomb guard: raises ValueError when the
    header declares more than :data:`MAX_IMAGE_PIXELS` pixels (nothing is decoded) or PIL
    finds the image unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{what} too large ({exc})") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable {what}: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{what} declares {width}×{height} pixels, more than the limit of "
                f"{MAX_IMAGE_PIXELS} (REFSAM_MAX_IMAGE_PIXELS); refusing to decode it"
            )
        yield image


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → H×W×3 uint8 RGB (ValueError when unreadable or too large)."""
    with open_image(data, "JPEG") as image:
        try:
            return np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"unreadable JPEG: {exc}") from exc


def check_jpeg(data: bytes) -> tuple[int, int]:
    """Fully parse a JPEG (fast: DCT-scaled decode) and return (height, width).

    Raises ValueError when the bytes are not a complete, decodable JPEG (e.g. truncated).
    """
    if not data.startswith(JPEG_MAGIC):
        raise ValueError("not a JPEG file (missing FFD8 start marker)")
    with open_image(data, "JPEG") as image:
        if image.format != "JPEG":
            raise ValueError(f"expected a JPEG, got {image.format}")
        width, height = image.size
        try:
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"unreadable JPEG: {exc}") from exc
    return height, width


def decode_json(data: bytes) -> dict[str, Any]:
    """The ``json`` member of a sample."""
    return json.loads(data.decode("utf-8"))
