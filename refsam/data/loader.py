"""WebDataset pipelines over our shards: training clips and whole evaluation videos.

Training (:func:`build_train_loader`) is a list of named stages::

    shard list (seeded shuffle by (seed, epoch), split by node) → split by worker
    → tar samples (raw bytes, no default decoders; unsafe members refused, reads retried)
    → one item per expression, or per group of K expressions of a video sharing one clip
    → seeded shuffle buffer → skip what a resumed run consumed
    → clip: pick T frames, decode only those JPEGs + masks, joint augmentation, resize/pad
    → batches of :class:`~refsam.data.types.ClipBatch`

Order is a function of (seed, epoch, rank, worker): no unseeded randomness anywhere.
Evaluation (:func:`iter_eval_videos`) yields whole videos in shard order at original size.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from refsam.config import AugmentConfig
from refsam.data.decode import decode_jpeg, decode_json
from refsam.data.index import read_manifest
from refsam.data.rle import decode_rle
from refsam.data.shards import shard_paths
from refsam.data.tario import shard_samples
from refsam.data.transforms import (
    augment_clip,
    flip_text,
    resize_and_pad,
    sample_params,
)
from refsam.data.types import ClipBatch, EvalExpression, EvalObject, EvalVideo, MaskSequence
from refsam.errors import DataError
from refsam.storage import AnyPath, as_path

DEFAULT_SHUFFLE_BUFFER = 64
NEIGHBOUR_WINDOW = 2  # neighbours are drawn within ± window × T frames of the anchor


def _rng(*keys: Any) -> np.random.Generator:
    """A generator seeded by a stable hash of ``keys`` (never Python's salted hash)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_clip_indices(
    n_frames: int, frames_per_clip: int, rng: np.random.Generator, stride: int | None = None
) -> list[int]:
    """An anchor frame and T−1 neighbours near it, sorted; repeats when the video is short
    (a 1-frame image gives [0] × T). With ``stride`` k: T frames k apart from a random start
    (the last frame repeated when the video is shorter than the span)."""
    if stride is not None:
        span = (frames_per_clip - 1) * stride
        start = int(rng.integers(max(1, n_frames - span)))
        return [min(start + i * stride, n_frames - 1) for i in range(frames_per_clip)]
    anchor = int(rng.integers(n_frames))
    if frames_per_clip == 1:
        return [anchor]
    radius = NEIGHBOUR_WINDOW * frames_per_clip
    pool = [
        i for i in range(max(0, anchor - radius), min(n_frames, anchor + radius + 1)) if i != anchor
    ]
    need = frames_per_clip - 1
    if not pool:
        return [anchor] * frames_per_clip
    picks = rng.choice(pool, size=need, replace=len(pool) < need).tolist()
    return sorted([anchor, *picks])


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _ShardList(torch.utils.data.IterableDataset):
    """Shard URLs shuffled by (seed, epoch) and split by node (explicit rank/world size)."""

    def __init__(
        self, shards: list[str], *, seed: int, epoch: int, rank: int, world_size: int
    ) -> None:
        super().__init__()
        self.shards, self.seed, self.epoch, self.rank, self.world_size = (
            shards,
            seed,
            epoch,
            rank,
            world_size,
        )

    def __iter__(self) -> Iterator[dict[str, str]]:
        order = list(self.shards)
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        for url in order[self.rank :: self.world_size]:
            yield {"url": url}


def _member(sample: dict[str, Any], frame_name: str) -> bytes:
    """The JPEG bytes of a frame (webdataset lower-cases member suffixes)."""
    return sample[f"{frame_name}.jpg".lower()]


def _group_expressions(per_clip: int, seed: int, epoch: int):
    """One video sample → items of up to ``per_clip`` expressions with ground truth that
    share one clip (frames stay bytes). ``per_clip`` 1: one item per expression, in file
    order; more: the video's expressions in a (seed, epoch, video)-seeded order, chunked."""

    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            meta = decode_json(sample["json"])
            objects = {o["id"]: o for o in meta["objects"]}
            usable = [
                exp
                for exp in meta["expressions"]
                if exp["obj_ids"]
                and all(objects.get(i, {}).get("masks") is not None for i in exp["obj_ids"])
            ]
            if per_clip > 1:
                rng = _rng(seed, epoch, meta["dataset"], meta["split"], meta["video"], "groups")
                usable = [usable[i] for i in rng.permutation(len(usable))]
            for start in range(0, len(usable), per_clip):
                yield {
                    "meta": meta,
                    "expressions": usable[start : start + per_clip],
                    "sample": sample,
                }

    return stage


def _seeded_shuffle(bufsize: int, seed: int, epoch: int, rank: int):
    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        worker, _ = _worker()
        rng = random.Random(f"{seed}/{epoch}/{rank}/{worker}")
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= bufsize:
                index = rng.randrange(len(buffer))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
        while buffer:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()

    return stage if bufsize > 1 else (lambda samples: samples)


def _skip_consumed(skip_batches: int, batch_size: int):
    """Skip the samples of the batches a resumed run already consumed (DataLoader hands out
    batches round-robin over workers, so worker w made batches w, w+W, …)."""

    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        worker, workers = _worker()
        mine = max(0, (skip_batches - worker + workers - 1) // workers)
        for index, sample in enumerate(samples):
            if index >= mine * batch_size:
                yield sample

    return stage


def _make_clip(
    img_size: int,
    frames_per_clip: int,
    seed: int,
    epoch: int,
    augment: AugmentConfig | None,
    stride: int | None = None,
):
    def make(item: dict[str, Any]) -> dict[str, Any]:
        meta, exps, sample = item["meta"], item["expressions"], item["sample"]
        rng = _rng(seed, epoch, meta["dataset"], meta["split"], meta["video"], exps[0]["exp_id"])
        indices = sample_clip_indices(len(meta["frame_names"]), frames_per_clip, rng, stride)
        height, width = meta["height"], meta["width"]
        objects = {o["id"]: o for o in meta["objects"]}
        void = meta.get("void")
        cache: dict[int, tuple[np.ndarray, list[np.ndarray], np.ndarray]] = {}
        for t in indices:  # decode each chosen frame once
            if t not in cache:
                frame = decode_jpeg(_member(sample, meta["frame_names"][t]))
                targets = []
                for exp in exps:
                    target = np.zeros((height, width), dtype=bool)
                    for obj_id in exp["obj_ids"]:
                        target |= decode_rle(objects[obj_id]["masks"][t], height, width)
                    targets.append(target)
                valid = (
                    ~decode_rle(void[t], height, width)
                    if void
                    else np.ones((height, width), dtype=bool)
                )
                cache[t] = (frame, targets, valid)
        frames = [cache[t][0] for t in indices]
        masks = [[cache[t][1][k] for t in indices] for k in range(len(exps))]  # K lists of T
        valid = [cache[t][2] for t in indices]
        texts = [exp["text"] for exp in exps]
        flipped = False
        if augment is not None:
            middle = np.logical_or.reduce([m[len(indices) // 2] for m in masks])
            params = sample_params(rng, height, width, middle, augment)
            frames, masks, valid = augment_clip(frames, masks, valid, params)
            if params.flip:
                texts, flipped = [flip_text(text) for text in texts], True
        f, m, v, size = resize_and_pad(frames, masks, valid, img_size)
        infos = [
            {
                "dataset": meta["dataset"],
                "split": meta["split"],
                "video": meta["video"],
                "exp_id": exp["exp_id"],
                "frame_names": [meta["frame_names"][t] for t in indices],
                "flipped": flipped,
            }
            for exp in exps
        ]
        return {
            "frames": f,
            "masks": m,
            "valid": v,
            "size": size,
            "texts": texts,
            "meta": infos,
        }

    return make


def collate_clips(clips: list[dict[str, Any]]) -> ClipBatch:
    """Stack clip dicts (each: frames T×…, masks K×T×…, K texts) into a :class:`ClipBatch`:
    G clips, B = ΣK expressions, ``clip_index`` the clip of each expression."""
    counts = [len(c["texts"]) for c in clips]
    return ClipBatch(
        frames=torch.from_numpy(np.stack([c["frames"] for c in clips])),
        masks=torch.from_numpy(np.concatenate([c["masks"] for c in clips])),
        valid=torch.from_numpy(np.stack([c["valid"] for c in clips])).repeat_interleave(
            torch.tensor(counts), dim=0
        ),
        input_sizes=torch.tensor([c["size"] for c in clips], dtype=torch.int64),
        texts=[text for c in clips for text in c["texts"]],
        meta=[info for c in clips for info in c["meta"]],
        clip_index=torch.repeat_interleave(torch.arange(len(clips)), torch.tensor(counts)),
    )


def _augment_config(augment: bool | AugmentConfig) -> AugmentConfig | None:
    if isinstance(augment, AugmentConfig):
        return augment
    return AugmentConfig() if augment else None


def _training_shards(shard_dirs: list[AnyPath]) -> list[str]:
    urls = []
    for shard_dir in shard_dirs:
        manifest = read_manifest(shard_dir)
        if not manifest["has_masks"]:
            raise DataError(
                f"{shard_dir}: {manifest['dataset']}/{manifest['split']} has no ground-truth "
                "masks; it cannot be used for training"
            )
        urls += [str(shard_dir / s["name"]) for s in manifest["shards"] if s["expressions"] > 0]
    return urls


def build_train_loader(
    shard_dirs: list[Path],
    *,
    img_size: int,
    frames_per_clip: int,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    skip: int = 0,
    augment: bool | AugmentConfig = True,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    expressions_per_clip: int = 1,
    clip_stride: int | None = None,
) -> Iterable[ClipBatch]:
    """One epoch of training batches (see module docstring). ``skip``: batches of this
    epoch a resumed run already consumed. A batch holds ``batch_size`` clips; with
    ``expressions_per_clip`` K > 1 each clip carries up to K expressions of its video
    (one encoder pass per frame serves them all); ``clip_stride``: see
    :func:`sample_clip_indices`. Fails clearly when there are fewer non-empty
    shards than ``world_size × max(1, num_workers)``."""
    urls = _training_shards([as_path(d) for d in shard_dirs])
    needed = world_size * max(1, num_workers)
    if len(urls) < needed:
        raise DataError(
            f"{len(urls)} shard(s) for {world_size} rank(s) × {max(1, num_workers)} worker(s): "
            "every rank and worker needs at least one shard; re-ingest with a smaller --shard-size "
            "or use fewer workers"
        )
    pipeline = wds.DataPipeline(
        _ShardList(urls, seed=seed, epoch=epoch, rank=rank, world_size=world_size),
        wds.split_by_worker,
        shard_samples,  # member checks + bounded retries
        _group_expressions(expressions_per_clip, seed, epoch),
        _seeded_shuffle(shuffle_buffer, seed, epoch, rank),
        _skip_consumed(skip, batch_size),
        wds.map(
            _make_clip(
                img_size, frames_per_clip, seed, epoch, _augment_config(augment), clip_stride
            )
        ),
        wds.batched(batch_size, collation_fn=collate_clips, partial=True),
    )
    if num_workers == 0:
        return pipeline
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers)


def _eval_video(sample: dict[str, Any]) -> EvalVideo:
    """One sample → EvalVideo; a malformed sample is a DataError naming shard and key."""
    try:
        return _build_eval_video(sample)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"{sample.get('__url__')}: sample {sample.get('__key__')!r} is malformed "
            f"({type(exc).__name__}: {exc}); check the shards with `refsam shards verify`"
        ) from None


def _build_eval_video(sample: dict[str, Any]) -> EvalVideo:
    meta = decode_json(sample["json"])
    h, w = meta["height"], meta["width"]
    return EvalVideo(
        dataset=meta["dataset"],
        split=meta["split"],
        video=meta["video"],
        frame_names=meta["frame_names"],
        height=h,
        width=w,
        expressions=[
            EvalExpression(e["exp_id"], e["text"], e["obj_ids"], e["annotation_set"])
            for e in meta["expressions"]
        ],
        objects=[
            EvalObject(
                o["id"],
                o["category"],
                None if o["masks"] is None else MaskSequence(o["masks"], h, w),
            )
            for o in meta["objects"]
        ],
        void=None if meta.get("void") is None else MaskSequence(meta["void"], h, w),
        jpeg_bytes=[_member(sample, n) for n in meta["frame_names"]],
    )


def iter_eval_videos(shard_dir: Path) -> Iterator[EvalVideo]:
    """Whole videos in shard order (frames in order, original sizes, masks if the split has GT)."""
    urls = [str(p) for p in shard_paths(shard_dir)]
    if not urls:
        raise DataError(f"{shard_dir}: no shard-*.tar files; run `refsam ingest` first")
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        shard_samples,  # member checks + bounded retries
        wds.map(_eval_video),
    )
    yield from pipeline
