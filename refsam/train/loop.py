"""One training step over clips, and the endless batch stream it consumes.

A step reads ``grad_accum`` micro-batches of clips; for each, the model runs the clip
frame by frame with the track state carried (``RefSAM.forward_clip``: not detached within
the clip, so the loss of frame t back-propagates into frames < t), the focal + dice loss
is taken over valid pixels, and gradients accumulate (DDP syncs only on the last
micro-batch). Then: unscale (fp16), clip the gradient norm, AdamW step, schedule step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from refsam.config import AugmentConfig
from refsam.data.loader import build_train_loader
from refsam.data.types import ClipBatch
from refsam.train.losses import MaskLoss, mask_loss
from refsam.train.schedule import WarmupCosine

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = fp32) and whether a GradScaler is needed (fp16)."""

    dtype: torch.dtype | None
    device_type: str

    @property
    def use_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU; fp32 (no autocast) on CPU."""
    if device.type != "cuda":
        return Precision(None, device.type)
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Precision(dtype, "cuda")


# ----------------------------------------------------------------------------- data
@dataclass
class LoaderPosition:
    """Where a stage's data stream is: epoch and batches of it already consumed."""

    epoch: int = 0
    batches: int = 0


@dataclass
class BatchStream:
    """Endless batches over epochs of ``build_train_loader``; exact resume from a position.

    The loader's order is a function of (seed, epoch) and it skips the batches a resumed
    run consumed, so ``position`` is all a checkpoint needs to continue the same stream.
    """

    shard_dirs: list[Path]
    img_size: int
    frames_per_clip: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    shuffle_buffer: int = 64
    augment: bool | AugmentConfig = True
    expressions_per_clip: int = 1
    clip_stride: int | None = None
    position: LoaderPosition = field(default_factory=LoaderPosition)
    _iterator: Iterator[ClipBatch] | None = None

    def _open(self) -> Iterator[ClipBatch]:
        loader: Iterable[ClipBatch] = build_train_loader(
            self.shard_dirs,
            img_size=self.img_size,
            frames_per_clip=self.frames_per_clip,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.position.epoch,
            skip=self.position.batches,
            augment=self.augment,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.num_workers,
            shuffle_buffer=self.shuffle_buffer,
            expressions_per_clip=self.expressions_per_clip,
            clip_stride=self.clip_stride,
        )
        return iter(loader)

    def next(self) -> ClipBatch:
        for _ in range(2):
            if self._iterator is None:
                self._iterator = self._open()
            batch = next(self._iterator, None)
            if batch is not None:
                self.position.batches += 1
                return batch
            self._iterator = None
            if self.position.batches == 0:
                break
            self.position = LoaderPosition(self.position.epoch + 1, 0)
        raise RuntimeError(
            f"the training data in {[str(d) for d in self.shard_dirs]} yields no clips"
        )


# ----------------------------------------------------------------------------- step
@dataclass
class StepStats:
    """What one optimiser step did (averaged over its micro-batches)."""

    loss: float
    focal: float
    dice: float
    grad_norm: float
    clips: int
    seconds: float
    lrs: dict[str, float]


def clip_loss(
    model: nn.Module,
    batch: ClipBatch,
    device: torch.device,
    precision: Precision,
    *,
    focal_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> MaskLoss:
    """Forward one batch of clips (frame by frame, state carried) and its loss."""
    frames = batch.frames.to(device, non_blocking=True)
    with precision.autocast():
        logits = model(frames, batch.texts, batch.input_sizes.to(device), batch.clip_index)
    return mask_loss(
        logits.float(),
        batch.masks.to(device, non_blocking=True),
        batch.valid.to(device, non_blocking=True),
        focal_weight=focal_weight,
        dice_weight=dice_weight,
    )


def train_step(
    model: nn.Module,
    next_batch: Callable[[], ClipBatch],
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    scaler: torch.amp.GradScaler | None,
    *,
    device: torch.device,
    precision: Precision,
    grad_accum: int = 1,
    grad_clip: float = 0.0,
    focal_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> StepStats:
    """One optimiser step over ``grad_accum`` micro-batches (see module docstring)."""
    start = time.perf_counter()
    model.train()
    lrs = schedule.lrs()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total = focal = dice = 0.0
    clips = 0
    for micro in range(grad_accum):
        batch = next_batch()
        sync = micro == grad_accum - 1 or not hasattr(model, "no_sync")
        context = contextlib.nullcontext() if sync else model.no_sync()
        with context:
            loss = clip_loss(
                model, batch, device, precision, focal_weight=focal_weight, dice_weight=dice_weight
            )
            scaled = loss.total / grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += float(loss.total.detach()) / grad_accum
        focal += loss.focal / grad_accum
        dice += loss.dice / grad_accum
        clips += batch.frames.shape[0]
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()
    return StepStats(
        loss=total,
        focal=focal,
        dice=dice,
        grad_norm=float(norm),
        clips=clips,
        seconds=time.perf_counter() - start,
        lrs=lrs,
    )
