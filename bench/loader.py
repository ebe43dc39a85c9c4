"""Training-loader throughput: our shards vs a plain raw-folder loader, and RSS over an epoch.

The raw-folder loader is ReferFormer-style: one item per expression, and for each clip it
opens the JPEG and palette-PNG files of the chosen frames. Both sides pick the same frames
(same sampler), decode the same way (PIL) and run the same joint augmentation and resize
(refsam.data.transforms). Runs are interleaved (5 repeats, median), each side both
"cold" (its files evicted from the page cache with posix_fadvise(DONTNEED) first, as for a
dataset larger than RAM) and "warm" (files cached). Goal: shards ÷ raw ≥ 1.3.
Data: Ref-YouTube-VOS train of the small demo (96×160 frames).
``--real-size``: the same at a real frame size (bench/_loader_real_size.py).
``--url s3://bucket/prefix`` (or ``--url local``: a local S3 server is started): the same
shards streamed from an object store ÷ read from local disk (bench/_loader_url.py).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result  # noqa: E402
from ingest import CACHE, demo_small  # noqa: E402

from refsam.config import AugmentConfig  # noqa: E402
from refsam.data.loader import _rng, build_train_loader, collate_clips, sample_clip_indices  # noqa: E402
from refsam.data.shards import ingest  # noqa: E402
from refsam.data.transforms import (
    augment_clip,
    flip_text,
    resize_and_pad,
    sample_params,
)  # noqa: E402
from refsam.paths import split_dir  # noqa: E402

IMG_SIZE, FRAMES, BATCH, REPEATS = 128, 3, 8, 5
REAL_SIZE_HELP = (
    "real frame size instead: 1280x720 JPEGs decoded, augmented and resized to 1024 px; frames/s "
    "per worker process, shards vs raw folders, peak RSS, decode/resize variants"
)

URL_HELP = (
    "stream the shards from this object-store prefix (s3://bucket/prefix; AWS_ENDPOINT_URL and "
    "credentials from the environment), or 'local' to start a local S3 server: clips/s from the "
    "bucket / from local disk, peak RSS over epochs"
)


class RawFolderClips:
    """ReferFormer-style dataset over the raw Ref-YouTube-VOS layout (files per frame)."""

    def __init__(self, root: Path, *, seed: int, img_size: int = IMG_SIZE) -> None:
        self.root = root
        self.img_size = img_size
        meta = json.loads(
            (root / "meta_expressions" / "train" / "meta_expressions.json").read_text()
        )
        self.items = [
            (vid, exp_id, entry["frames"], e["exp"], e["obj_id"])
            for vid, entry in sorted(meta["videos"].items())
            for exp_id, e in sorted(entry["expressions"].items())
        ]
        random.Random(seed).shuffle(self.items)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        vid, exp_id, names, text, obj_id = self.items[index]
        rng = _rng(self.seed, 0, "ref-youtube-vos", "train", vid, exp_id)
        picks = sample_clip_indices(len(names), FRAMES, rng)
        frames, masks, valid = [], [], []
        for t in picks:
            frame = np.asarray(
                Image.open(self.root / "train" / "JPEGImages" / vid / f"{names[t]}.jpg").convert(
                    "RGB"
                )
            )
            labels = np.asarray(
                Image.open(self.root / "train" / "Annotations" / vid / f"{names[t]}.png")
            )
            frames.append(frame)
            masks.append(labels == int(obj_id))
            valid.append(np.ones(labels.shape, dtype=bool))
        params = sample_params(
            rng, frames[0].shape[0], frames[0].shape[1], masks[len(masks) // 2], AugmentConfig()
        )
        frames, masks_k, valid = augment_clip(frames, [masks], valid, params)
        f, m, v, size = resize_and_pad(frames, masks_k, valid, self.img_size)
        text = flip_text(text) if params.flip else text
        return {
            "frames": f,
            "masks": m,
            "valid": v,
            "size": size,
            "texts": [text],
            "meta": [{"video": vid, "exp_id": exp_id}],
        }


def raw_clips(dataset: RawFolderClips, n: int) -> int:
    done = 0
    for start in range(0, n, BATCH):
        collate_clips([dataset[i % len(dataset)] for i in range(start, min(n, start + BATCH))])
        done += min(BATCH, n - start)
    return done


def shard_clips(shard_dir: Path, n: int) -> int:
    done, epoch = 0, 0
    while done < n:
        for batch in build_train_loader(
            [shard_dir],
            img_size=IMG_SIZE,
            frames_per_clip=FRAMES,
            batch_size=BATCH,
            seed=0,
            epoch=epoch,
        ):
            done += len(batch)
            if done >= n:
                break
        epoch += 1
    return done


def evict(root: Path) -> None:
    """Drop ``root``'s files from the page cache (no privileges needed)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rss_over_epochs(shard_dir: Path, epochs: int) -> list[float]:
    process = psutil.Process()
    samples = []
    for epoch in range(epochs):
        for i, _batch in enumerate(
            build_train_loader(
                [shard_dir],
                img_size=IMG_SIZE,
                frames_per_clip=FRAMES,
                batch_size=BATCH,
                seed=0,
                epoch=epoch,
            )
        ):
            if i % 10 == 0:
                samples.append(process.memory_info().rss / 2**20)
    return samples


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0], flags={"--real-size": REAL_SIZE_HELP}, options={"--url": URL_HELP}
    )
    torch.set_num_threads(1)
    if args.url:
        from _loader_url import url_main

        url_main(args.url, full=bool(args.full), shard_clips=shard_clips)
        return
    if args.real_size:
        from _loader_real_size import real_size_main

        real_size_main(full=bool(args.full), raw_dataset=RawFolderClips, raw_clips=raw_clips)
        return
    raw = demo_small()
    root = raw / "ref-youtube-vos"
    shards_root = CACHE / "loader-shards"
    ingest(
        "ref-youtube-vos", "train", root, shards_root, shard_size=16, progress=False
    )  # no-op when done
    shard_dir = split_dir(shards_root, "ref-youtube-vos", "train")
    clips = 800 if args.full else 240
    dataset = RawFolderClips(root, seed=0)
    raw_clips(dataset, 2 * BATCH), shard_clips(shard_dir, 2 * BATCH)  # warm-up
    runs = {
        "shards": lambda: shard_clips(shard_dir, clips),
        "raw": lambda: raw_clips(dataset, clips),
    }
    times: dict[str, list[float]] = {f"{k}_{c}": [] for c in ("cold", "warm") for k in runs}
    for _ in range(REPEATS):
        for cache in ("cold", "warm"):
            for name, fn in runs.items():
                if cache == "cold":
                    evict(root), evict(shard_dir)
                start = time.perf_counter()
                fn()
                times[f"{name}_{cache}"].append(time.perf_counter() - start)
    cps = {k: clips / statistics.median(v) for k, v in times.items()}
    rss = rss_over_epochs(shard_dir, 6 if args.full else 2)
    quarter = max(1, len(rss) // 4)
    growth = max(rss[quarter:]) - max(rss[:quarter])
    ratios = {
        f"shards_over_raw_{c}": cps[f"shards_{c}"] / cps[f"raw_{c}"] for c in ("cold", "warm")
    }
    write_result(
        "loader",
        params={
            "dataset": "ref-youtube-vos/train (demo small)",
            "clips": clips,
            "img_size": IMG_SIZE,
            "frames_per_clip": FRAMES,
            "batch_size": BATCH,
            "repeats": REPEATS,
            "torch_threads": 1,
            "rss_epochs": 6 if args.full else 2,
            "expressions": len(dataset),
        },
        figures={
            **{f"clips_per_s_{k}": v for k, v in cps.items()},
            "peak_rss_mb": max(rss),
            "rss_first_quarter_peak_mb": max(rss[:quarter]),
            "rss_growth_after_first_quarter_mb": growth,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        ratios=ratios,
        goal="shards / raw clips/s >= 1.3 (cold and warm page cache); peak RSS flat over epochs (growth < 50 MB)",
        meets_goal=min(ratios.values()) >= 1.3 and growth < 50,
    )


if __name__ == "__main__":
    main()
