"""``bench/loader.py --real-size``: the training loader at a real frame size.

Ref-YouTube-VOS frames are 1280×720 JPEGs; the real recipes train at 1024 px. One process
(= one loader worker, one torch thread) reads clips of T = 3 frames (batch 4), decodes,
augments (the recipe's flip + crop + photometric jitter) and resizes them to 1024 px, from
our shards and from raw folders (ReferFormer-style, the same decode and transforms).
Figures: frames/s per worker from process CPU time (the machine is shared; wall-clock
rates recorded too), peak RSS of the worker, and per-frame costs of JPEG decoders (PIL,
OpenCV, torchvision) and 1280×720 → 1024×576 resizers (PIL, OpenCV, torch). Goal: ≥ 25
frames/s per worker core (a vit_b GPU consumes ~10 frames/s: 4 workers keep 8 GPUs fed)
and shards ≥ raw folders.
Data: 1280×720 frames with real-image statistics (smooth structure + texture noise, JPEG
quality 90, ~150-250 KB, as YouTube frames), 2 objects per video, written in the
published layout and ingested like any split.
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import write_result
from PIL import Image

from refsam.config import AugmentConfig
from refsam.data.decode import decode_jpeg
from refsam.data.loader import build_train_loader
from refsam.data.shards import ingest
from refsam.paths import split_dir

WIDTH, HEIGHT, IMG_SIZE, FRAMES, BATCH = 1280, 720, 1024, 3, 4


def _frame(rng: np.random.Generator, t: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.normal(0, 12, (HEIGHT, WIDTH, 3)).astype(np.int16)  # sensor noise / texture
    return np.clip(np.roll(image, 8 * t, axis=1), 0, 255).astype(np.uint8)


def write_real_size_split(root: Path, videos: int, frames: int) -> Path:
    """A Ref-YouTube-VOS train split of ``videos`` × ``frames`` 1280×720 frames."""
    meta, expressions = {"videos": {}}, {"videos": {}}
    for v in range(videos):
        vid = f"real{v:04d}"
        rng = np.random.default_rng(v)
        names = [f"{5 * t:05d}" for t in range(frames)]
        for t, name in enumerate(names):
            jpeg = root / "train" / "JPEGImages" / vid / f"{name}.jpg"
            jpeg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_frame(rng, t)).save(jpeg, quality=90)
            labels = np.zeros((HEIGHT, WIDTH), np.uint8)
            cv2.ellipse(labels, (300 + 10 * t, 360), (160, 120), 0, 0, 360, 1, -1)
            cv2.ellipse(labels, (900 - 10 * t, 300), (120, 200), 0, 0, 360, 2, -1)
            png = root / "train" / "Annotations" / vid / f"{name}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(labels, mode="P")
            image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
            image.save(png)
        objects = {str(k): {"category": "thing", "frames": names} for k in (1, 2)}
        meta["videos"][vid] = {"objects": objects}
        expressions["videos"][vid] = {
            "expressions": {"0": {"exp": "the thing on the left", "obj_id": "1"},
                            "1": {"exp": "the thing on the right", "obj_id": "2"}},
            "frames": names,
        }  # fmt: skip
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    folder = root / "meta_expressions" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta_expressions.json").write_text(json.dumps(expressions))
    return root


def _timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    cpu, wall = time.process_time(), time.perf_counter()
    count = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, count


def _per_frame_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return 1000 * (time.process_time() - start) / repeats


def _stage_costs(jpeg: bytes, repeats: int) -> dict[str, float]:
    """Per-frame CPU ms of decoders and resizers on one real-size JPEG."""
    from torchvision.io import decode_jpeg as tv_decode

    data = torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
    rgb = decode_jpeg(jpeg)
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()
    size = (IMG_SIZE, IMG_SIZE * HEIGHT // WIDTH)
    return {
        "decode_pil_ms": _per_frame_ms(lambda: decode_jpeg(jpeg), repeats),
        "decode_opencv_ms": _per_frame_ms(
            lambda: cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), repeats
        ),
        "decode_torchvision_ms": _per_frame_ms(lambda: tv_decode(data), repeats),
        "resize_pil_bilinear_ms": _per_frame_ms(
            lambda: Image.fromarray(rgb).resize(size, Image.BILINEAR), repeats
        ),
        "resize_opencv_linear_ms": _per_frame_ms(
            lambda: cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), repeats
        ),
        "resize_torch_bilinear_ms": _per_frame_ms(
            lambda: torch.nn.functional.interpolate(
                tensor, size=size[::-1], mode="bilinear", align_corners=False
            ),
            repeats,
        ),
    }


def real_size_main(*, full: bool, raw_dataset: type, raw_clips: Callable[..., int]) -> None:
    videos, frames, clips, repeats = (12, 12, 48, 3) if full else (4, 8, 16, 2)
    augment = AugmentConfig()  # the recipes' augmentation (flip, crop, photometric)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_real_size_split(Path(tmp) / "raw", videos, frames)
        ingest("ref-youtube-vos", "train", root, Path(tmp) / "shards", shard_size=2, progress=False)
        shard_dir = split_dir(Path(tmp) / "shards", "ref-youtube-vos", "train")
        raw = raw_dataset(root, seed=0, img_size=IMG_SIZE)

        def from_shards() -> int:
            done = 0
            while done < clips:
                for batch in build_train_loader(
                    [shard_dir], img_size=IMG_SIZE, frames_per_clip=FRAMES, batch_size=BATCH,
                    seed=0, epoch=done, augment=augment,
                ):  # fmt: skip
                    done += len(batch)
                    if done >= clips:
                        break
            return done

        runs = {"shards": from_shards, "raw": lambda: raw_clips(raw, clips)}
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for fn in runs.values():
            fn()  # warm-up (page cache, imports)
        for _ in range(repeats):
            for name, fn in runs.items():  # interleaved
                cpu, wall, done = _timed(fn)
                rates[name].append((done * FRAMES / cpu, done * FRAMES / wall))
        jpeg = next((root / "train" / "JPEGImages").rglob("*.jpg")).read_bytes()
        costs = _stage_costs(jpeg, 10 if full else 5)
        jpeg_kb = len(jpeg) / 1024
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        f"frames_per_cpu_s_{name}": statistics.median(r[0] for r in values)
        for name, values in rates.items()
    }
    figures |= {
        f"frames_per_s_wall_{name}": statistics.median(r[1] for r in values)
        for name, values in rates.items()
    }
    figures |= {**costs, "peak_rss_mb_worker": peak_rss_mb, "jpeg_kb": jpeg_kb}
    ratios = {
        "shards_over_raw": figures["frames_per_cpu_s_shards"] / figures["frames_per_cpu_s_raw"]
    }
    per_worker = figures["frames_per_cpu_s_shards"]
    write_result(
        "loader_real_size",
        params={
            "frame_size": [HEIGHT, WIDTH],
            "img_size": IMG_SIZE,
            "frames_per_clip": FRAMES,
            "batch_size": BATCH,
            "clips": clips,
            "repeats": repeats,
            "videos": videos,
            "augment": "recipe default (flip, crop, photometric)",
            "torch_threads": 1,
            "rates_from": "process CPU time of one worker process",
        },  # fmt: skip
        figures=figures,
        ratios=ratios,
        goal=">= 25 frames/s per worker core from shards; shards >= raw folders",
        meets_goal=per_worker >= 25 and ratios["shards_over_raw"] >= 1.0,
    )
