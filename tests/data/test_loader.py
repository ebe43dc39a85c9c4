"""Loaders read back exactly what the raw files hold (pixel for pixel), in a seeded order."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from refsam.data.loader import build_train_loader, iter_eval_videos, sample_clip_indices
from refsam.data.transforms import flip_text
from refsam.data.types import ClipBatch
from refsam.errors import DataError


def _jpeg(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _png(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "P"
    return np.asarray(image)


def test_eval_ytvos_and_davis_match_raw_frames_palette_masks_and_void(
    demo_raw: Path, ingested
) -> None:
    out, _ = ingested
    layouts = {
        "ref-youtube-vos": ("train/JPEGImages", "train/Annotations"),
        "ref-davis17": ("DAVIS/JPEGImages/480p", "DAVIS/Annotations_unsupervised/480p"),
    }
    saw_void = False
    for dataset, (jpegs, pngs) in layouts.items():
        base = demo_raw / ("ref-davis" if dataset == "ref-davis17" else dataset)
        videos = list(iter_eval_videos(out / dataset / "train"))
        assert videos
        for video in videos:
            frames = list(video.frames())
            assert len(frames) == len(video.frame_names)
            for t, name in enumerate(video.frame_names):
                np.testing.assert_array_equal(
                    frames[t], _jpeg(base / jpegs / video.video / f"{name}.jpg")
                )
                labels = _png(base / pngs / video.video / f"{name}.png")
                assert frames[t].shape[:2] == labels.shape == (video.height, video.width)
                for obj in video.objects:
                    np.testing.assert_array_equal(obj.masks[t], labels == int(obj.obj_id))
                if dataset == "ref-davis17":
                    np.testing.assert_array_equal(video.void[t], labels == 255)
                    saw_void |= bool((labels == 255).any())
                else:
                    assert video.void is None
    assert saw_void, "the demo DAVIS masks should contain void pixels"


def test_eval_mevis_union_of_rles_matches_mask_dict(demo_raw: Path, ingested) -> None:
    out, _ = ingested
    meta = json.loads((demo_raw / "mevis" / "train" / "meta_expressions.json").read_text())
    mask_dict = json.loads((demo_raw / "mevis" / "train" / "mask_dict.json").read_text())
    checked_multi = False
    for video in iter_eval_videos(out / "mevis" / "train"):
        for exp in video.expressions:
            raw = meta["videos"][video.video]["expressions"][exp.exp_id]
            target = video.target_masks(exp)
            for t in range(len(video.frame_names)):
                want = np.zeros((video.height, video.width), dtype=bool)
                for anno in raw["anno_id"]:
                    rle = mask_dict[str(anno)][t]
                    if rle is not None:
                        want |= mask_utils.decode(
                            {"size": rle["size"], "counts": rle["counts"].encode()}
                        ).astype(bool)
                np.testing.assert_array_equal(target[t], want)
            checked_multi |= len(raw["anno_id"]) > 1
    assert checked_multi


def test_train_mevis_targets_are_the_union_of_the_referred_objects(
    demo_raw: Path, ingested
) -> None:
    """A MeViS training clip's target is the union of its expression's objects' masks (a
    group expression: several objects; a frame where none is visible: an empty target)."""
    out, _ = ingested
    base = demo_raw / "mevis" / "train"
    meta = json.loads((base / "meta_expressions.json").read_text())
    mask_dict = json.loads((base / "mask_dict.json").read_text())
    groups = 0
    size = max(Image.open(next((base / "JPEGImages").rglob("*.jpg"))).size)  # no resize
    for batch in build_train_loader(
        [out / "mevis" / "train"], img_size=size, frames_per_clip=3, batch_size=4, seed=2,
        augment=False,
    ):  # fmt: skip
        for i, info in enumerate(batch.meta):
            raw = meta["videos"][info["video"]]
            annos = raw["expressions"][info["exp_id"]]["anno_id"]
            h, w = batch.input_sizes[i].tolist()
            for k, name in enumerate(info["frame_names"]):
                t = raw["frames"].index(name)
                want = np.zeros((h, w), dtype=bool)
                for anno in annos:
                    rle = mask_dict[str(anno)][t]
                    if rle is not None:
                        want |= mask_utils.decode(
                            {"size": rle["size"], "counts": rle["counts"].encode()}
                        ).astype(bool)
                np.testing.assert_array_equal(batch.masks[i, k, :h, :w].numpy(), want)
            groups += len(annos) > 1
    assert groups > 0


def test_eval_refcoco_masks_match_polygons_and_splits_without_gt(demo_raw: Path, ingested) -> None:
    out, _ = ingested
    coco = COCO(str(demo_raw / "coco" / "refcoco" / "instances.json"))  # the reference decoder
    kinds = set()
    for video in [
        v for split in ("train", "val") for v in iter_eval_videos(out / "refcoco" / split)
    ]:
        (frame,) = list(video.frames())
        np.testing.assert_array_equal(
            frame, _jpeg(demo_raw / "coco" / "train2014" / f"{video.frame_names[0]}.jpg")
        )
        for obj in video.objects:
            ann = coco.anns[int(obj.obj_id)]
            kinds.add(type(ann["segmentation"]).__name__)
            np.testing.assert_array_equal(obj.masks[0], coco.annToMask(ann).astype(bool))
    assert kinds == {"list", "dict"}, "expected both polygon and RLE annotations in the demo"
    for video in iter_eval_videos(out / "mevis" / "valid"):
        assert all(o.masks is None for o in video.objects) and video.expressions
        assert video.target_masks(video.expressions[0]) is None


def test_train_clips_without_augmentation_equal_raw_pixels(demo_raw: Path, ingested) -> None:
    out, _ = ingested
    base = demo_raw / "ref-davis"
    size = max(Image.open(next((base / "DAVIS/JPEGImages/480p").rglob("*.jpg"))).size)
    batches = list(
        build_train_loader(
            [out / "ref-davis17" / "train"],
            img_size=size,
            frames_per_clip=3,
            batch_size=4,
            seed=1,
            augment=False,
        )
    )
    assert batches and isinstance(batches[0], ClipBatch)
    seen = 0
    for batch in batches:
        b, t = batch.frames.shape[:2]
        assert batch.frames.dtype == torch.uint8 and batch.masks.dtype == torch.float32
        assert batch.valid.dtype == torch.bool and batch.input_sizes.dtype == torch.int64
        assert (
            batch.masks.shape == batch.valid.shape == (b, t, size, size) and len(batch.texts) == b
        )
        for i, meta in enumerate(batch.meta):
            h, w = batch.input_sizes[i].tolist()
            exp = meta["exp_id"]
            obj_id = int(exp.split("_")[1])
            for k, name in enumerate(meta["frame_names"]):
                frame = _jpeg(base / "DAVIS/JPEGImages/480p" / meta["video"] / f"{name}.jpg")
                labels = _png(
                    base / "DAVIS/Annotations_unsupervised/480p" / meta["video"] / f"{name}.png"
                )
                assert (h, w) == frame.shape[:2]
                np.testing.assert_array_equal(
                    batch.frames[i, k, :, :h, :w].permute(1, 2, 0).numpy(), frame
                )
                np.testing.assert_array_equal(
                    batch.masks[i, k, :h, :w].numpy(), (labels == obj_id).astype(np.float32)
                )
                np.testing.assert_array_equal(batch.valid[i, k, :h, :w].numpy(), labels != 255)
                assert not batch.valid[i, k, h:, :].any() and not batch.valid[i, k, :, w:].any()
                assert not batch.frames[i, k, :, h:, :].any()
            seen += 1
    assert seen == 20  # every expression of ref-davis17/train once per epoch


def test_image_becomes_identical_pseudo_clip_even_with_augmentation(ingested) -> None:
    out, _ = ingested
    for batch in build_train_loader(
        [out / "refcoco" / "train"],
        img_size=64,
        frames_per_clip=4,
        batch_size=8,
        seed=3,
        augment=True,
    ):
        assert batch.frames.shape[1] == 4
        for k in range(1, 4):
            assert torch.equal(batch.frames[:, k], batch.frames[:, 0])
            assert torch.equal(batch.masks[:, k], batch.masks[:, 0])
        for text, meta in zip(batch.texts, batch.meta, strict=True):
            assert meta["flipped"] in (True, False) and text


def test_expressions_of_a_video_share_one_clip_with_their_own_masks(ingested) -> None:
    out, _ = ingested
    dirs = [out / "ref-youtube-vos" / "train"]
    kw = dict(img_size=64, frames_per_clip=2, seed=1, augment=False)
    single = {
        (m["video"], m["exp_id"]): (batch.masks[i], m["frame_names"])
        for batch in build_train_loader(dirs, batch_size=4, **kw)
        for i, m in enumerate(batch.meta)
    }
    grouped, clips, shared, compared = {}, 0, 0, 0
    for batch in build_train_loader(dirs, batch_size=2, expressions_per_clip=3, **kw):
        g = batch.frames.shape[0]
        clips += g
        assert batch.clip_index is not None and len(batch.clip_index) == len(batch.texts)
        assert batch.masks.shape[0] == batch.valid.shape[0] == len(batch.meta)
        assert batch.input_sizes.shape == (g, 2) and int(batch.clip_index.max()) == g - 1
        for i, meta in enumerate(batch.meta):
            first = int(torch.nonzero(batch.clip_index == batch.clip_index[i])[0])
            assert meta["video"] == batch.meta[first]["video"]  # one video per clip
            assert meta["frame_names"] == batch.meta[first]["frame_names"]
            shared += i != first
            key = (meta["video"], meta["exp_id"])
            grouped[key] = batch.masks[i]
            mask, frame_names = single[key]
            if frame_names == meta["frame_names"]:  # same frames: its own objects' masks
                assert torch.equal(batch.masks[i], mask)
                compared += 1
    assert grouped.keys() == single.keys()  # every expression once per epoch
    assert shared > 0 and clips < len(grouped) and compared >= clips


def _signature(batches: list[ClipBatch]) -> list[tuple]:
    return [
        (m["video"], m["exp_id"], tuple(m["frame_names"]), float(b.frames[i].float().mean()))
        for b in batches
        for i, m in enumerate(b.meta)
    ]


def test_order_is_a_function_of_seed_and_epoch_and_skip_resumes(ingested) -> None:
    out, _ = ingested
    dirs = [out / "mevis" / "train", out / "ref-youtube-vos" / "train", out / "refcocog" / "train"]

    def run(**kw) -> list[ClipBatch]:
        return list(build_train_loader(dirs, img_size=48, frames_per_clip=2, batch_size=3, **kw))

    a, b = run(seed=5, epoch=0), run(seed=5, epoch=0)
    assert _signature(a) == _signature(b)
    other = run(seed=5, epoch=1)
    assert _signature(other) != _signature(a)
    assert sorted(s[:2] for s in _signature(other)) == sorted(s[:2] for s in _signature(a))
    resumed = run(seed=5, epoch=0, skip=4)
    assert _signature(resumed) == _signature(a[4:])
    assert torch.equal(resumed[0].frames, a[4].frames) and resumed[0].texts == a[4].texts


def test_ranks_split_shards_and_too_few_shards_fail(ingested) -> None:
    out, _ = ingested
    dirs = [out / "refcocog" / "train"]  # 4 shards of 2 images
    kw = {"img_size": 32, "frames_per_clip": 1, "batch_size": 2, "seed": 0, "augment": False}
    parts = [
        {
            (m["video"], m["exp_id"])
            for b in build_train_loader(dirs, rank=r, world_size=2, **kw)
            for m in b.meta
        }
        for r in range(2)
    ]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert parts[0] | parts[1] == {
        (m["video"], m["exp_id"]) for b in build_train_loader(dirs, **kw) for m in b.meta
    }
    with pytest.raises(DataError, match="4 shard.*3 rank.*2 worker"):
        build_train_loader(dirs, rank=0, world_size=3, num_workers=2, **kw)
    with pytest.raises(DataError, match="no ground-truth"):
        build_train_loader([out / "mevis" / "valid"], **kw)


@pytest.mark.slow
def test_worker_processes_give_every_sample_once(ingested) -> None:
    out, _ = ingested
    dirs = [out / "refcocog" / "train"]
    kw = {"img_size": 32, "frames_per_clip": 2, "batch_size": 2, "seed": 0}
    single = sorted(
        (m["video"], m["exp_id"]) for b in build_train_loader(dirs, **kw) for m in b.meta
    )
    multi = sorted(
        (m["video"], m["exp_id"])
        for b in build_train_loader(dirs, num_workers=2, **kw)
        for m in b.meta
    )
    assert single == multi and len(single) == 29


def test_pickle_members_are_never_decoded(ingested, tmp_path: Path) -> None:
    out, _ = ingested
    source = out / "refcoco" / "val"
    target = tmp_path / "refcoco" / "val"
    target.mkdir(parents=True)
    for name in ("manifest.json", "index.parquet"):
        (target / name).write_bytes((source / name).read_bytes())
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with (
        tarfile.open(source / "shard-000000.tar") as src,
        tarfile.open(target / "shard-000000.tar", "w") as dst,
    ):
        members = src.getmembers()
        for member in members:
            dst.addfile(member, src.extractfile(member))
        key = members[0].name.split(".", 1)[0]
        payload = pickle.dumps(Exploit())
        for ext in ("pkl", "pyd", "pickle"):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(payload)
            dst.addfile(info, io.BytesIO(payload))
    batches = list(
        build_train_loader([target], img_size=32, frames_per_clip=1, batch_size=4, seed=0)
    )
    videos = list(iter_eval_videos(target))
    assert batches and videos and not marker.exists()


def test_clip_indices_and_caption_flip() -> None:
    rng = np.random.default_rng(0)
    for n, t in [(1, 3), (2, 5), (30, 3), (7, 7)]:
        idx = sample_clip_indices(n, t, rng)
        assert len(idx) == t and idx == sorted(idx) and all(0 <= i < n for i in idx)
    assert sample_clip_indices(1, 4, rng) == [0, 0, 0, 0]
    assert flip_text("the dog on the Left, moving right") == "the dog on the Right, moving left"
    assert flip_text("leftmost LEFT cleft brightness") == "rightmost RIGHT cleft brightness"


def test_strided_clips_are_in_order_k_apart_and_reproducible() -> None:
    for n_frames, frames, stride in ((20, 3, 1), (20, 2, 4), (5, 3, 2), (2, 4, 1), (1, 3, 1)):
        picks = [
            sample_clip_indices(n_frames, frames, np.random.default_rng(s), stride)
            for s in range(30)
        ]
        for clip in picks:
            assert len(clip) == frames and clip == sorted(clip)
            assert all(0 <= i < n_frames for i in clip)
            if (frames - 1) * stride < n_frames:  # the span fits: exactly k apart
                assert all(b - a == stride for a, b in zip(clip, clip[1:], strict=False))
        if n_frames >= 10:  # the start is random
            assert len({clip[0] for clip in picks}) > 3
    assert sample_clip_indices(20, 3, np.random.default_rng(7), 1) == sample_clip_indices(
        20, 3, np.random.default_rng(7), 1
    )
