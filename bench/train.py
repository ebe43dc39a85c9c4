"""Training and evaluation throughput of the tiny variant on CPU.

(a) Training clips/s at T = 1, 3, 5 frames per clip (batch 4, Ref-YouTube-VOS demo clips,
    the whole step: loader, frame-by-frame forward with the track state, focal + dice,
    backward, AdamW), and at T = 2 with up to 8 expressions sharing each clip (the demo
    recipe's `expressions_per_clip`: expressions/s is the figure that grows); stage 1's
    RefCOCO pseudo-clips (one image as T = 3 frames) with the image encoded once per clip vs
    once per frame (`RefSAM.share_repeated_frames`).
(b) Online evaluation frames/s with 1 and 8 expressions per video (the encoder runs once
    per frame for all expressions). On a CPU the rates come from
    process CPU time with one torch thread (this machine is shared: wall time measures the
    neighbours); wall-clock rates are recorded too. Sides interleaved, repeated, medians.
    Goal: 8 expressions cost < 3× one expression per frame (one encoder pass per frame).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refsam.config import load_config  # noqa: E402
from refsam.data.demo import generate_demo  # noqa: E402
from refsam.data.shards import ingest  # noqa: E402
from refsam.eval.predictor import OnlinePredictor  # noqa: E402
from refsam.train.loop import BatchStream, resolve_precision, train_step  # noqa: E402
from refsam.train.schedule import WarmupCosine, build_optimizer  # noqa: E402
from refsam.train.state import build_model, seed_everything  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo-tiny-cpu.yaml"
TEXTS = [
    "the small red circle moving left", "a blue square", "the big green triangle moving up",
    "the yellow diamond that is not moving", "a purple shape moving right", "the small squares",
    "the big red shape", "a circle moving down",
]  # fmt: skip


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _pseudo_clip_rates(model, shard_dir, cfg, steps, repeats, device, precision):  # noqa: ANN001, ANN202
    """Stage 1's RefCOCO pseudo-clips (T = 3 copies of one image, flip-only augmentation):
    training clips per CPU second with the image encoded once per clip vs once per frame."""
    optimizer = build_optimizer(model.param_groups(), cfg.train)
    schedule = WarmupCosine(optimizer, warmup=0, total=10_000)
    stream = BatchStream([shard_dir], img_size=model.img_size, frames_per_clip=3, batch_size=4,
                         seed=0, expressions_per_clip=1)  # fmt: skip
    rates: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    clips = 0

    def run(share: bool) -> None:
        nonlocal clips
        model.share_repeated_frames = share

        def next_batch():  # noqa: ANN202
            nonlocal clips
            batch = stream.next()
            clips += batch.frames.shape[0]
            return batch

        for _ in range(steps):
            train_step(model, next_batch, optimizer, schedule, None, device=device,
                       precision=precision, grad_clip=1.0)  # fmt: skip

    for share in rates:
        run(share)  # warm-up
    for _ in range(repeats):
        for share in rates:  # interleaved
            clips = 0
            cpu, wall = _timed(lambda share=share: run(share))
            rates[share].append((clips / cpu, clips / wall))
    model.share_repeated_frames = True
    return rates


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    full = bool(args.full)
    torch.set_num_threads(1)
    seed_everything(0)
    steps, repeats, n_frames = (6, 5, 24) if full else (2, 3, 8)
    cfg = load_config(CONFIG, ["tracking.enabled=false"])
    model = build_model(cfg)
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_demo(root / "demo", seed=0, scale="tiny")
        ingest("ref-youtube-vos", "train", root / "demo" / "raw" / "ref-youtube-vos", root / "shards",
               shard_size=8, progress=False)  # fmt: skip
        ingest("refcoco", "train", root / "demo" / "raw" / "coco", root / "shards",
               shard_size=8, progress=False)  # fmt: skip
        shard_dir = root / "shards" / "ref-youtube-vos" / "train"
        pseudo = _pseudo_clip_rates(model, root / "shards" / "refcoco" / "train", cfg, steps,
                                    repeats, device, precision)  # fmt: skip
        variants = [(1, 1), (3, 1), (5, 1), (2, 8)]  # (frames per clip, expressions per clip)
        train_rates: dict[tuple[int, int], list[tuple[float, float, float]]] = {
            v: [] for v in variants
        }
        optimizer = build_optimizer(model.param_groups(), cfg.train)
        schedule = WarmupCosine(optimizer, warmup=0, total=10_000)
        streams = {
            (t, k): BatchStream(
                [shard_dir], img_size=model.img_size, frames_per_clip=t, batch_size=4, seed=0,
                expressions_per_clip=k,
            )
            for t, k in variants
        }  # fmt: skip
        expressions, clips = dict.fromkeys(variants, 0), dict.fromkeys(variants, 0)

        def run(v: tuple[int, int]) -> None:
            def next_batch():
                batch = streams[v].next()
                expressions[v] += len(batch.texts)
                clips[v] += batch.frames.shape[0]  # the last batch of an epoch may be short
                return batch

            for _ in range(steps):
                train_step(model, next_batch, optimizer, schedule, None, device=device,
                           precision=precision, grad_clip=1.0)  # fmt: skip

        for v in variants:
            run(v)  # warm-up
        for _ in range(repeats):
            for v in variants:  # interleaved
                expressions[v] = clips[v] = 0
                cpu, wall = _timed(lambda v=v: run(v))
                train_rates[v].append((clips[v] / cpu, clips[v] / wall, expressions[v] / cpu))

    predictor = OnlinePredictor(model, device="cpu")
    frames = [
        np.random.default_rng(i).integers(0, 255, (96, 160, 3), dtype=np.uint8)
        for i in range(n_frames)
    ]
    eval_rates: dict[int, list[tuple[float, float]]] = {1: [], 8: []}

    def infer(n: int) -> None:
        for _ in predictor.track(iter(frames), TEXTS[:n]):
            pass

    for n in eval_rates:
        infer(n)
    for _ in range(repeats):
        for n in eval_rates:
            cpu, wall = _timed(lambda n=n: infer(n))
            eval_rates[n].append((n_frames / cpu, n_frames / wall))

    def med(values: list[tuple[float, float]], index: int) -> float:
        return statistics.median(v[index] for v in values)

    figures = {}
    for (t, k), values in train_rates.items():
        name = f"T{t}" if k == 1 else f"T{t}_K{k}"
        figures[f"train_clips_per_cpu_s_{name}"] = med(values, 0)
        figures[f"train_clips_per_s_wall_{name}"] = med(values, 1)
        figures[f"train_expressions_per_cpu_s_{name}"] = med(values, 2)
    for share, values in pseudo.items():
        figures[f"stage1_T3_clips_per_cpu_s_{'shared' if share else 'per_frame'}"] = med(values, 0)
    for n, values in eval_rates.items():
        figures[f"eval_frames_per_cpu_s_{n}expr"] = med(values, 0)
        figures[f"eval_frames_per_s_wall_{n}expr"] = med(values, 1)
    cost_ratio = figures["eval_frames_per_cpu_s_1expr"] / figures["eval_frames_per_cpu_s_8expr"]
    ratios = {
        "eval_cost_8expr_over_1expr": cost_ratio,
        "train_cost_T3_over_T1": figures["train_clips_per_cpu_s_T1"]
        / figures["train_clips_per_cpu_s_T3"],
        "train_cost_T5_over_T1": figures["train_clips_per_cpu_s_T1"]
        / figures["train_clips_per_cpu_s_T5"],
        "stage1_T3_throughput_shared_over_per_frame": figures["stage1_T3_clips_per_cpu_s_shared"]
        / figures["stage1_T3_clips_per_cpu_s_per_frame"],
    }
    write_result(
        "train",
        params={
            "variant": "tiny",
            "batch_size": 4,
            "steps_per_repeat": steps,
            "repeats": repeats,
            "eval_frames": n_frames,
            "frame_size": [96, 160],
            "torch_threads": 1,
            "rates_from": "process CPU time (shared machine); wall rates recorded too",
        },  # fmt: skip
        figures=figures,
        ratios=ratios,
        goal="8 expressions cost < 3x one expression per frame (one encoder pass per frame)",
        meets_goal=cost_ratio < 3.0,
    )


if __name__ == "__main__":
    main()
