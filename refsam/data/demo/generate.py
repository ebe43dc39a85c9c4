"""The demo plan and its generator (deterministic synthetic data, published raw formats).

:func:`build_plan` decides everything (scenes, object attributes and motion, expressions,
splits, ids) from ``(seed, scale)``; :func:`generate_demo` renders the plan with the writers
of :mod:`refsam.data.demo.writers` into ``<out>/raw/{ref-youtube-vos,ref-davis,mevis,coco}``
and the held-out ground truth and expression subsets (``subsets.json``: which expressions
need their motion words) into ``<out>/heldout/`` (DATA.md, INTERFACES.md). The plan is
also the structured record of what every expression means (tests use it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from refsam.data.demo import coco, writers
from refsam.data.demo.language import (
    SceneExpression,
    group_expressions,
    multi_expression,
    single_expression,
)
from refsam.data.demo.scenes import Scene, make_scene
from refsam.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    """How much of each dataset to generate; frame counts are inclusive ranges."""

    ytvos: tuple[int, int, int]  # train, valid (competition), test videos
    ytvos_frames: tuple[int, int]
    expressions_per_video: int
    davis: tuple[int, int]  # train, val sequences
    davis_frames: tuple[int, int]
    mevis: tuple[int, int, int]  # train, valid_u, valid videos
    mevis_frames: tuple[int, int]
    coco_images: int


SCALES = {
    "tiny": Scale((3, 2, 2), (5, 6), 3, (2, 3), (5, 6), (2, 2, 2), (5, 6), 12),
    # Training splits sized for the demo recipe (issue 7): the tiny model over-fits fewer
    # videos/images (Ref-YTVOS valid fell with more steps on 150 videos); held-out splits
    # are planned per item, so they do not change with these counts.
    "small": Scale((900, 20, 12), (10, 12), 3, (10, 8), (14, 18), (40, 10, 10), (12, 16), 1500),
}
FRAME_SIZES = {"ref-youtube-vos": (96, 160), "ref-davis": (108, 193), "mevis": (112, 150)}  # h, w
CLASSIC_CAR = "classic-car"  # the DAVIS sequence whose name the text files misspell
DAVIS_WORDS = (
    "amber", "brisk", "calm", "dusty", "early", "fuzzy", "giant", "hazy", "icy", "jolly",
    "kind", "lazy", "misty", "noisy", "odd", "proud", "quick", "rapid", "sunny", "tidy",
)  # fmt: skip
DAVIS_NOUNS = ("kite", "comet", "drone", "parade", "swarm", "orbit", "dance", "shuffle")


@dataclass(frozen=True)
class VideoPlan:
    """One video of one split: its scene, frame names and expressions."""

    split: str
    scene: Scene
    frame_names: list[str]
    expressions: list[SceneExpression]


@dataclass(frozen=True)
class ImagePlan:
    """One COCO image: ``image_id``, its still scene and the annotation id of each object."""

    image_id: int
    scene: Scene
    ann_ids: dict[int, int]


@dataclass(frozen=True)
class RefPlan:
    """One RefCOCO-family ref: one object of one image with its sentences."""

    ref_id: int
    ann_id: int
    image_id: int
    obj_id: int
    category_id: int
    split: str
    sentences: list[SceneExpression]


@dataclass(frozen=True)
class DemoPlan:
    """Everything :func:`generate_demo` writes, before rendering."""

    seed: int
    scale: str
    ytvos: dict[str, list[VideoPlan]]
    davis: dict[str, list[VideoPlan]]
    mevis: dict[str, list[VideoPlan]]
    coco_images: list[ImagePlan]
    refs: dict[str, list[RefPlan]]


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one item, independent of generation order (crc32 of string keys)."""
    parts = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng([seed, *parts])


def _hex_name(rng: np.random.Generator, length: int) -> str:
    return "".join(f"{int(v):x}" for v in rng.integers(0, 16, length))


def _video_expressions(
    rng: np.random.Generator, scene: Scene, count: int, *, mevis: bool
) -> list[SceneExpression]:
    """``count`` single-object expressions (cycling over objects) plus MeViS group ones."""
    expressions: list[SceneExpression] = []
    order = [int(i) for i in rng.permutation(len(scene.objects))]
    seen: set[str] = set()
    for k in range(count * 3):
        if len(expressions) >= count:
            break
        target = scene.objects[order[k % len(order)]]
        e = single_expression(
            rng, scene, target, exp_id=str(len(expressions)), style="video", need_motion=mevis
        )
        if e.text not in seen:
            seen.add(e.text)
            expressions.append(e)
    if mevis:
        for attrs in group_expressions(scene)[:2]:
            e = multi_expression(rng, scene, attrs, exp_id=str(len(expressions)))
            if e.text not in seen:
                seen.add(e.text)
                expressions.append(e)
    return expressions


def _video(
    seed: int, dataset: str, split: str, index: int, scale: Scale, frames: tuple[int, int]
) -> VideoPlan:
    """Plan video ``index`` of ``dataset/split``: scene, 5-step or consecutive frame names."""
    rng = _rng(seed, dataset, split, index)
    height, width = FRAME_SIZES[dataset]
    n_frames = int(rng.integers(frames[0], frames[1] + 1))
    if dataset == "ref-davis":
        name = f"{DAVIS_WORDS[index % len(DAVIS_WORDS)]}-{DAVIS_NOUNS[index % len(DAVIS_NOUNS)]}"
        name = CLASSIC_CAR if (split == "valid" and index == 0) else f"{name}-{split[0]}{index}"
    else:
        name = _hex_name(rng, 10 if dataset == "ref-youtube-vos" else 12)
    scene = make_scene(
        rng,
        name=name,
        width=width,
        height=height,
        n_frames=n_frames,
        n_objects=int(rng.integers(2, 5)),
        distinct_appearance=dataset == "ref-davis",
        leaver=index % 3 == 0,
        occlude=index % 2 == 1,
    )
    step = 5 if dataset == "ref-youtube-vos" else 1
    frame_names = [f"{t * step:05d}" for t in range(n_frames)]
    if dataset == "ref-davis":
        expressions = [
            single_expression(
                rng, scene, obj, exp_id=f"{aset}_{obj.obj_id}",  # the reader's id
                style="davis1" if aset < 2 else "davis2",
                appearance_only=aset % 2 == 0, need_motion=aset % 2 == 1, annotation_set=aset,
            )
            for obj in scene.objects
            for aset in range(4)
        ]  # fmt: skip
    else:
        count = scale.expressions_per_video
        expressions = _video_expressions(rng, scene, count, mevis=dataset == "mevis")
    return VideoPlan(split, scene, frame_names, expressions)


def _coco(seed: int, scale: Scale) -> tuple[list[ImagePlan], dict[str, list[RefPlan]]]:
    """Still images and the refs of refcoco, refcoco+ (unc splits) and refcocog (umd)."""
    rng = _rng(seed, "coco")
    image_ids = sorted(
        int(i) for i in rng.choice(np.arange(1, 581_930), scale.coco_images, replace=False)
    )
    images = []
    for index, image_id in enumerate(image_ids):
        irng = _rng(seed, "coco", index)
        scene = make_scene(
            irng, name=str(image_id), width=int(irng.integers(112, 177)),
            height=int(irng.integers(96, 129)), n_frames=1, n_objects=int(irng.integers(2, 5)),
            motion=False, distinct_appearance=True,
        )  # fmt: skip
        images.append(
            ImagePlan(image_id, scene, {o.obj_id: image_id * 10 + o.obj_id for o in scene.objects})
        )
    families = {
        "refcoco": ("train", "val", "testA", "testB"),
        "refcoco+": ("train", "val", "testA", "testB"),
        "refcocog": ("train", "val", "test"),
    }
    refs: dict[str, list[RefPlan]] = {}
    for family, splits in families.items():
        frng = _rng(seed, family)
        weights = np.array([0.7] + [0.3 / (len(splits) - 1)] * (len(splits) - 1))
        assigned = list(splits) + [
            str(s) for s in frng.choice(splits, len(images) - len(splits), p=weights)
        ]
        style = "refcocog" if family == "refcocog" else "refcoco"
        family_refs: list[RefPlan] = []
        sent_id = 0
        for image, split in zip(images, assigned, strict=True):
            objects = list(image.scene.objects)
            chosen = frng.permutation(len(objects))[: int(frng.integers(1, len(objects) + 1))]
            for obj in (objects[int(i)] for i in sorted(chosen)):
                sentences, texts = [], set()
                for _ in range(int(frng.integers(1, 4))):
                    e = single_expression(
                        frng,
                        image.scene,
                        obj,
                        exp_id=str(sent_id),
                        style=style,
                        appearance_only=True,
                    )
                    if e.text not in texts:
                        texts.add(e.text)
                        sentences.append(e)
                        sent_id += 1
                family_refs.append(
                    RefPlan(
                        len(family_refs), image.ann_ids[obj.obj_id], image.image_id, obj.obj_id,
                        coco.CATEGORY_IDS[obj.shape], split, sentences,
                    )
                )  # fmt: skip
        refs[family] = family_refs
    return images, refs


def build_plan(*, seed: int = 0, scale: str = "small") -> DemoPlan:
    """Decide every scene, expression and id of the demo data for ``(seed, scale)``."""
    cfg = SCALES[scale]
    ytvos = {
        split: [_video(seed, "ref-youtube-vos", split, i, cfg, cfg.ytvos_frames) for i in range(n)]
        for split, n in zip(("train", "valid", "test"), cfg.ytvos, strict=True)
    }
    davis = {
        split: [_video(seed, "ref-davis", split, i, cfg, cfg.davis_frames) for i in range(n)]
        for split, n in zip(("train", "valid"), cfg.davis, strict=True)
    }
    mevis = {
        split: [_video(seed, "mevis", split, i, cfg, cfg.mevis_frames) for i in range(n)]
        for split, n in zip(("train", "valid_u", "valid"), cfg.mevis, strict=True)
    }
    images, refs = _coco(seed, cfg)
    return DemoPlan(seed, scale, ytvos, davis, mevis, images, refs)


def _scored_splits(plan: DemoPlan) -> dict[str, dict[str, list[VideoPlan]]]:
    """Dataset → split → its videos, for every video split with ground truth (in the shards
    or held out); Ref-YouTube-VOS ``valid`` holds the test videos too, as its held-out GT."""
    return {
        "ref-youtube-vos": {
            "train": plan.ytvos["train"],
            "valid": plan.ytvos["valid"] + plan.ytvos["test"],
        },
        "ref-davis17": plan.davis,
        "mevis": plan.mevis,
    }


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _video_counts(plans: dict[str, list[VideoPlan]]) -> dict[str, int]:
    videos = [v for split in plans.values() for v in split]
    return {
        "videos": len(videos),
        "expressions": sum(len(v.expressions) for v in videos),
        "frames": sum(len(v.frame_names) for v in videos),
    }


def _summary(plan: DemoPlan, out: Path, seconds: float) -> dict[str, Any]:
    raw = out / "raw"
    datasets: dict[str, dict[str, int]] = {
        "ref-youtube-vos": {**_video_counts(plan.ytvos), "bytes": _bytes(raw / "ref-youtube-vos")},
        "ref-davis17": {**_video_counts(plan.davis), "bytes": _bytes(raw / "ref-davis")},
        "mevis": {**_video_counts(plan.mevis), "bytes": _bytes(raw / "mevis")},
        "coco-train2014": {
            "images": len(plan.coco_images),
            "frames": len(plan.coco_images),
            "bytes": _bytes(raw / "coco/train2014"),
        },
    }
    for family, refs in plan.refs.items():
        datasets[family] = {
            "images": len({r.image_id for r in refs}),
            "refs": len(refs),
            "expressions": sum(len(r.sentences) for r in refs),
            "bytes": _bytes(raw / "coco" / family),
        }
    return {
        "out": str(out),
        "seed": plan.seed,
        "scale": plan.scale,
        "datasets": datasets,
        "heldout_bytes": _bytes(out / "heldout"),
        "total_bytes": _bytes(raw) + _bytes(out / "heldout"),
        "seconds": round(seconds, 3),
    }


def _check_args(out: Path, seed: int, scale: str, workers: int) -> None:
    if scale not in SCALES:
        raise UserError(f"unknown demo scale {scale!r}; expected one of {sorted(SCALES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"demo seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"demo workers must be a positive integer, got {workers!r}")
    if out.exists() and not out.is_dir():
        raise UserError(f"demo output {out} exists and is not a directory")


@contextmanager
def _mapper(workers: int) -> Iterator[writers.Mapper]:
    """``map`` itself for one worker, else the ordered ``map`` of a process pool (spawned:
    safe whatever threads the caller runs)."""
    if workers == 1:
        yield map
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for _ in range(workers):  # start the workers (imports) now, while the caller plans
            pool.submit(writers.ready)
        yield partial(pool.map, chunksize=8)


def generate_demo(
    out: Path, *, seed: int = 0, scale: str = "small", workers: int = 1
) -> dict[str, Any]:
    """Write the demo datasets under ``out/raw`` and ``out/heldout``; return a summary.

    Both folders are built in a temporary folder inside ``out`` and then swapped in, so a
    re-run replaces them whole (no stale files) and leaves anything else in ``out`` alone.
    Same ``(seed, scale)`` → byte-identical files, whatever ``workers`` (processes that
    render frames; every item is planned before rendering starts).

    Returns:
        ``{"out", "seed", "scale", "datasets": {name: {videos|images, expressions, frames,
        bytes, ...}}, "heldout_bytes", "total_bytes", "seconds"}``.

    Raises:
        UserError: unknown ``scale``, negative ``seed``, ``workers`` < 1 or ``out`` is a file.
    """
    out = Path(out)
    _check_args(out, seed, scale, workers)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".demo-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        raw, heldout = staging / "raw", staging / "heldout"
        with _mapper(workers) as mapper:
            plan = build_plan(seed=seed, scale=scale)
            writers.write_ytvos(
                raw / "ref-youtube-vos", heldout / "ref-youtube-vos", plan.ytvos, mapper
            )
            writers.write_davis(raw / "ref-davis", plan.davis, mapper)
            writers.write_mevis(raw / "mevis", heldout / "mevis", plan.mevis, mapper)
            coco.write_coco(raw / "coco", plan.coco_images, plan.refs, mapper)
            for dataset, splits in _scored_splits(plan).items():
                writers.write_subsets(heldout / dataset, splits)
        for name in ("raw", "heldout"):
            old = out / f".demo-old-{name}-{os.getpid()}"
            if (out / name).exists():
                (out / name).rename(old)
            (staging / name).rename(out / name)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = _summary(plan, out, time.perf_counter() - start)
    log.info(
        "demo data (%s, seed %d) written to %s in %.1f s with %d worker(s)",
        scale,
        seed,
        out,
        summary["seconds"],
        workers,
    )
    return summary
