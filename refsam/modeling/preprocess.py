"""Frame preprocessing, in one place (MODEL.md, ARCHITECTURE.md "Shared contracts").

The data side (training loader, predictor) calls :func:`resize_frame` /
:func:`resize_mask` to bring uint8 RGB frames to ``longest side = img_size`` and keeps
both sizes; the model calls :func:`normalize_and_pad` (SAM's pixel mean/std, pad to a
square at the bottom/right) and :func:`postprocess_masks` to go back to the original size.
The arithmetic is SAM's own: ``ResizeLongestSide.get_preprocess_shape`` and the same
mean/std, so a frame preprocessed here equals what ``SamPredictor`` would feed SAM.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, img_size: int) -> tuple[int, int]:
    """(h, w) after resizing so that the longest side equals ``img_size`` (SAM's rule)."""
    return ResizeLongestSide.get_preprocess_shape(height, width, img_size)


def resize_frame(frame: np.ndarray, img_size: int) -> np.ndarray:
    """Resize an H×W×3 uint8 RGB frame to longest side ``img_size``: bilinear (OpenCV's
    SIMD resize, ~7× faster than PIL's at 1280×720 → 1024, issue 21); area averaging when
    shrinking by more than half, where bilinear sampling would alias."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB frame, got {frame.shape} {frame.dtype}")
    h, w = resized_shape(frame.shape[0], frame.shape[1], img_size)
    if (h, w) == frame.shape[:2]:
        return frame
    shrink = h * 2 < frame.shape[0]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, img_size: int) -> np.ndarray:
    """Resize an H×W mask or label map (any integer/bool dtype) with nearest neighbour."""
    h, w = resized_shape(mask.shape[0], mask.shape[1], img_size)
    if (h, w) == mask.shape[:2]:
        return mask
    dtype = mask.dtype
    image = Image.fromarray(mask.astype(np.uint8) if dtype.kind == "b" else mask)
    return np.asarray(image.resize((w, h), Image.NEAREST)).astype(dtype)


def normalize_and_pad(
    frames: torch.Tensor, img_size: int, input_sizes: torch.Tensor | None = None
) -> torch.Tensor:
    """B×3×h×w uint8/float (0–255) → B×3×S×S float: SAM's normalisation, zero pad bottom/right.

    Frames that arrive already padded to S×S (the training loader pads uint8 with zeros)
    pass ``input_sizes`` (B×2 int, h×w before padding): the padding is then set to 0
    *after* normalising, as SAM pads, so both routes give the same encoder input.
    """
    mean = torch.tensor(PIXEL_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=frames.device).view(1, 3, 1, 1)
    x = (frames.float() - mean) / std
    h, w = x.shape[-2:]
    if h > img_size or w > img_size:
        raise ValueError(f"frame {h}×{w} is larger than img_size {img_size}; resize it first")
    x = F.pad(x, (0, img_size - w, 0, img_size - h))
    if input_sizes is not None:
        sizes = torch.as_tensor(input_sizes, device=x.device).view(-1, 2)
        rows = torch.arange(img_size, device=x.device)
        inside = (rows.view(1, -1, 1) < sizes[:, 0].view(-1, 1, 1)) & (
            rows.view(1, 1, -1) < sizes[:, 1].view(-1, 1, 1)
        )
        x = x * inside.unsqueeze(1)
    return x


def upscale_logits(logits: torch.Tensor, img_size: int) -> torch.Tensor:
    """Low-res mask logits B×C×h'×w' → B×C×S×S (the padded model input size), as SAM."""
    return F.interpolate(logits, (img_size, img_size), mode="bilinear", align_corners=False)


def restore_size(
    logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Logits B×C×S×S at the padded input size → B×C×H×W: crop the padding, resize (as SAM)."""
    x = logits[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)


def postprocess_masks(
    logits: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
) -> torch.Tensor:
    """Low-res mask logits B×C×h'×w' → B×C×H×W logits at the original frame size (as SAM)."""
    return restore_size(upscale_logits(logits, img_size), input_size, original_size)
