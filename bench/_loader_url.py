"""``bench/loader.py --url``: the training loader streaming shards from an object store ÷
reading the same shards from local disk, and RSS over epochs while streaming.

The shards are the demo-small Ref-YouTube-VOS train split (bench/ingest.py's cache),
ingested once locally and once to ``<url>/ref-youtube-vos/train`` (a no-op when there).
``--url local`` starts a local S3-compatible server (refsam.services.s3_server, a separate
process, so the server's work is not charged to the loader's process) with a fresh bucket.
Both sides run the same loader (one process, 1 torch thread), interleaved, 5 repeats,
median. Goal: bucket ÷ local ≥ 0.8 on loopback; peak RSS flat over epochs (< 50 MB growth).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator

import psutil
from _common import write_result
from ingest import CACHE, demo_small

from refsam.data.loader import build_train_loader
from refsam.data.shards import ingest
from refsam.paths import split_dir
from refsam.services import create_bucket, environment, s3_client_env, s3_server
from refsam.storage import AnyPath, as_path

REPEATS = 5
DATASET, SPLIT = "ref-youtube-vos", "train"


@contextlib.contextmanager
def _bucket(url: str) -> Iterator[str]:
    """``url`` itself, or for ``local`` a prefix in a fresh bucket of a local S3 server."""
    if url != "local":
        yield url
        return
    with s3_server(CACHE / "s3-server.log") as server, environment(s3_client_env(server.url)):
        yield create_bucket(server.url, "refsam-bench") + "/shards"


def _rss_streaming(
    shard_dir: AnyPath, epochs: int, img_size: int, frames: int, batch: int
) -> list[float]:
    process = psutil.Process()
    samples = []
    for epoch in range(epochs):
        loader = build_train_loader(
            [shard_dir], img_size=img_size, frames_per_clip=frames, batch_size=batch, seed=0,
            epoch=epoch,
        )  # fmt: skip
        for i, _batch in enumerate(loader):
            if i % 5 == 0:
                samples.append(process.memory_info().rss / 2**20)
    return samples


def url_main(url: str, *, full: bool, shard_clips: Callable[[AnyPath, int], int]) -> None:
    from loader import BATCH, FRAMES, IMG_SIZE

    raw = demo_small() / DATASET
    local_root = CACHE / "loader-shards"
    ingest(DATASET, SPLIT, raw, local_root, shard_size=16, progress=False)
    local = split_dir(local_root, DATASET, SPLIT)
    clips = 800 if full else 240
    with _bucket(url) as prefix:
        start = time.perf_counter()
        summary = ingest(DATASET, SPLIT, raw, as_path(prefix), shard_size=16, progress=False)
        ingest_s = time.perf_counter() - start
        remote = split_dir(prefix, DATASET, SPLIT)
        shard_bytes = sum(p.stat().st_size for p in local.glob("shard-*.tar"))
        shard_clips(remote, 2 * BATCH), shard_clips(local, 2 * BATCH)  # warm-up
        times: dict[str, list[float]] = {"bucket": [], "local": []}
        for _ in range(REPEATS):
            for name, where in (("bucket", remote), ("local", local)):
                start = time.perf_counter()
                shard_clips(where, clips)
                times[name].append(time.perf_counter() - start)
        epochs = 6 if full else 3
        rss = _rss_streaming(remote, epochs, IMG_SIZE, FRAMES, BATCH)
    cps = {k: clips / statistics.median(v) for k, v in times.items()}
    quarter = max(1, len(rss) // 4)
    growth = max(rss[quarter:]) - max(rss[:quarter])
    ratio = cps["bucket"] / cps["local"]
    write_result(
        "loader_url",
        params={
            "url": "local S3 server (moto_server on loopback)" if url == "local" else url,
            "dataset": f"{DATASET}/{SPLIT} (demo small)",
            "shards": summary.shards,
            "shard_mb": shard_bytes / 1e6,
            "clips": clips,
            "img_size": IMG_SIZE,
            "frames_per_clip": FRAMES,
            "batch_size": BATCH,
            "repeats": REPEATS,
            "rss_epochs": epochs,
        },
        figures={
            "clips_per_s_bucket": cps["bucket"],
            "clips_per_s_local": cps["local"],
            # an epoch reads every shard once and yields one clip per expression
            "stream_mb_per_s": cps["bucket"] * shard_bytes / max(1, summary.expressions) / 1e6,
            "ingest_to_bucket_s": ingest_s,
            "peak_rss_mb": max(rss),
            "rss_first_quarter_peak_mb": max(rss[:quarter]),
            "rss_growth_after_first_quarter_mb": growth,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        ratios={"bucket_over_local": ratio},
        goal="bucket / local clips/s >= 0.8 on loopback; peak RSS flat over epochs (growth < 50 MB)",
        meets_goal=ratio >= 0.8 and growth < 50,
    )
