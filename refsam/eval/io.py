"""Reading and writing mask PNGs in the standard layouts.

Two encodings are accepted wherever masks are read:

- palette ("P") PNGs whose pixel *indices* are object labels (DAVIS / YouTube-VOS style,
  255 = void in DAVIS ground truth);
- single-channel 8-bit ("L") PNGs holding labels or 0/255 binary masks (MeViS and
  Ref-YouTube-VOS submissions). Mode "1" reads as 0/1; an RGB(A) image is accepted only when
  its colour channels are equal (a grey image saved as RGB), since colours are not labels.

Every error names the file and what was expected (:class:`~refsam.errors.UserError`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from refsam.data.decode import MAX_IMAGE_PIXELS
from refsam.errors import UserError
from refsam.storage import as_path, is_remote

VOID_LABEL = 255


def davis_palette() -> bytes:
    """The 256-colour palette used by DAVIS / YouTube-VOS annotations (768 bytes, RGB)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        label, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[index] = (r, g, b)
    return palette.tobytes()


_PALETTE = davis_palette()


def read_png(path: Path) -> np.ndarray:
    """Read a mask PNG as an H×W uint8 array of labels (palette indices or grey values)."""
    path = as_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(path.read_bytes()) if is_remote(path) else path)
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UserError(
                    f"{path}: declares {width}x{height} pixels, more than the limit of "
                    f"{MAX_IMAGE_PIXELS} (REFSAM_MAX_IMAGE_PIXELS); not decoded"
                )
            mode = image.mode
            if mode in ("P", "L"):
                return np.asarray(image, dtype=np.uint8)
            if mode == "1":
                return np.asarray(image, dtype=np.uint8)
            if mode in ("RGB", "RGBA", "LA"):
                pixels = np.asarray(image)
            else:
                raise UserError(f"{path}: unsupported PNG mode {mode!r}; expected P, L or 1")
    except FileNotFoundError:
        raise UserError(f"{path}: mask file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{path}: image too large, not decoded ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read PNG ({exc})") from None
    colour = pixels[..., :1] if mode == "LA" else pixels[..., :3]
    if mode != "LA" and not (
        np.array_equal(colour[..., 0], colour[..., 1])
        and np.array_equal(colour[..., 0], colour[..., 2])
    ):
        raise UserError(
            f"{path}: colour {mode} PNG; expected a palette (P) or single-channel (L) mask"
        )
    return np.ascontiguousarray(colour[..., 0], dtype=np.uint8)


def read_binary_mask(path: Path) -> np.ndarray:
    """Read a mask PNG as an H×W bool array (any non-zero value is foreground)."""
    return read_png(path) > 0


def read_png_stack(paths: Sequence[Path], size: tuple[int, int] | None = None) -> np.ndarray:
    """Read several PNGs of one size into a T×H×W uint8 stack.

    Args:
        paths: the files, in frame order.
        size: expected (height, width); default the first file's size.

    Raises:
        UserError: naming the first file that is missing, unreadable or of another size.
    """
    stack: np.ndarray | None = None
    for index, path in enumerate(paths):
        frame = read_png(path)
        if stack is None:
            expected = size or frame.shape
            stack = np.empty((len(paths), *expected), dtype=np.uint8)
        if frame.shape != stack.shape[1:]:
            raise UserError(
                f"{path}: mask size {frame.shape[1]}x{frame.shape[0]} (WxH), expected "
                f"{stack.shape[2]}x{stack.shape[1]}"
            )
        stack[index] = frame
    if stack is None:
        return np.zeros((0, *(size or (0, 0))), dtype=np.uint8)
    return stack


def list_pngs(folder: Path) -> list[str]:
    """Sorted frame names (file stems) of the ``*.png`` files directly in ``folder``."""
    return sorted(p.stem for p in as_path(folder).glob("*.png") if p.is_file())


def encode_png(array: np.ndarray, *, palette: bool) -> bytes:
    """PNG bytes of an H×W uint8 array: palette image (DAVIS colours) or 8-bit grey."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected an H×W array, got shape {array.shape}")
    data = np.ascontiguousarray(array, dtype=np.uint8)
    size = (data.shape[1], data.shape[0])
    image = Image.frombytes("P" if palette else "L", size, data.tobytes())
    if palette:
        image.putpalette(_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_binary_png(mask: np.ndarray) -> bytes:
    """PNG bytes of an H×W mask as 8-bit grey 0/255 (the submission format)."""
    return encode_png(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8), palette=False)


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Write an H×W label map as a palette PNG (DAVIS colours), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(labels, palette=True))


def write_binary_png(path: Path, mask: np.ndarray) -> None:
    """Write an H×W mask as an 8-bit 0/255 grey PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_binary_png(mask))
