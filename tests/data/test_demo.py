"""The demo generator writes each dataset by the published rules of DATA.md."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from refsam.cli import main
from refsam.data.demo import build_plan, generate_demo
from refsam.data.demo.language import matching_objects
from refsam.data.demo.scenes import ATTRIBUTES, object_mask, render_labels
from refsam.errors import UserError


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _png(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "P", path
    return np.array(image)


def _jpeg_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "JPEG"
        return image.height, image.width


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global: only builtin containers and scalars can be rebuilt."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _load_refs(path: Path) -> list:
    return _PlainUnpickler(io.BytesIO(path.read_bytes())).load()


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- Ref-YouTube-VOS -------------------------------------------------------------------


def _check_ytvos_split(
    meta_exps: dict, annotations: Path, frames_root: Path, objects: dict
) -> None:
    for vid, entry in meta_exps["videos"].items():
        frames = entry["frames"]
        assert frames == [f"{5 * i:05d}" for i in range(len(frames))]
        assert sorted(p.stem for p in (frames_root / vid).glob("*.jpg")) == frames
        size = _jpeg_size(frames_root / vid / f"{frames[0]}.jpg")
        seen: dict[str, list[str]] = {}
        for frame in frames:
            labels = _png(annotations / vid / f"{frame}.png")
            assert labels.shape == size
            for obj_id in np.unique(labels[labels > 0]):
                seen.setdefault(str(obj_id), []).append(frame)
        assert set(seen) == set(objects[vid]["objects"])
        for obj_id, obj in objects[vid]["objects"].items():
            assert isinstance(obj["category"], str)
            assert obj["frames"] == seen[obj_id]


def test_ytvos_train_layout_and_masks(demo_root: Path) -> None:
    root = demo_root / "raw/ref-youtube-vos"
    meta = _json(root / "train/meta.json")
    exps = _json(root / "meta_expressions/train/meta_expressions.json")
    assert set(meta["videos"]) == set(exps["videos"])
    for entry in exps["videos"].values():
        assert set(entry) == {"expressions", "frames"}
        for exp_id, e in entry["expressions"].items():
            assert exp_id.isdigit() and set(e) == {"exp", "obj_id"}
            assert isinstance(e["exp"], str) and e["exp"] and isinstance(e["obj_id"], str)
    _check_ytvos_split(exps, root / "train/Annotations", root / "train/JPEGImages", meta["videos"])


def test_ytvos_some_object_leaves_the_frame(demo_root: Path) -> None:
    meta = _json(demo_root / "raw/ref-youtube-vos/train/meta.json")
    exps = _json(demo_root / "raw/ref-youtube-vos/meta_expressions/train/meta_expressions.json")
    leavers = [
        (vid, obj_id)
        for vid, video in meta["videos"].items()
        for obj_id, obj in video["objects"].items()
        if obj["frames"] == exps["videos"][vid]["frames"][: len(obj["frames"])]
        and len(obj["frames"]) < len(exps["videos"][vid]["frames"])
    ]
    assert leavers


def test_ytvos_valid_lists_valid_and_test_and_heldout_gt(demo_root: Path) -> None:
    root = demo_root / "raw/ref-youtube-vos"
    valid = _json(root / "meta_expressions/valid/meta_expressions.json")["videos"]
    test = _json(root / "meta_expressions/test/meta_expressions.json")["videos"]
    assert set(test) < set(valid) and set(valid) - set(test)
    assert not (root / "valid/Annotations").exists() and not (root / "test").exists()
    assert sorted(p.name for p in (root / "valid/JPEGImages").iterdir()) == sorted(valid)
    for vid, entry in valid.items():
        assert all(set(e) == {"exp"} for e in entry["expressions"].values())
        if vid in test:
            assert test[vid] == entry
    heldout = demo_root / "heldout/ref-youtube-vos/valid"
    held_meta = _json(heldout / "meta.json")
    held_exps = _json(heldout / "meta_expressions.json")
    assert set(held_meta["videos"]) == set(valid) == set(held_exps["videos"])
    _check_ytvos_split(
        held_exps, heldout / "Annotations", root / "valid/JPEGImages", held_meta["videos"]
    )
    assert not (demo_root / "raw/ref-youtube-vos/heldout").exists()


# --- Ref-DAVIS17 -----------------------------------------------------------------------

_LINE = re.compile(r'^(?P<video>\S+) (?P<obj>\d+) "(?P<exp>[^"]+)"$')


def test_davis_layout_void_and_ids(demo_root: Path) -> None:
    root = demo_root / "raw/ref-davis/DAVIS"
    sets = {s: (root / f"ImageSets/2017/{s}.txt").read_text().split() for s in ("train", "val")}
    assert sets["train"] and sets["val"] and not set(sets["train"]) & set(sets["val"])
    void_seen = False
    for seq in sets["train"] + sets["val"]:
        frames = sorted(p.stem for p in (root / "JPEGImages/480p" / seq).glob("*.jpg"))
        assert frames == [f"{i:05d}" for i in range(len(frames))]
        masks = sorted(p.stem for p in (root / "Annotations_unsupervised/480p" / seq).glob("*.png"))
        assert masks == frames
        size = _jpeg_size(root / "JPEGImages/480p" / seq / "00000.jpg")
        for frame in frames:
            labels = _png(root / "Annotations_unsupervised/480p" / seq / f"{frame}.png")
            assert labels.shape == size
            void_seen |= bool((labels == 255).any())
    assert void_seen
    assert size[1] % 2 == 1  # an odd frame width somewhere


def test_davis_text_encodings_names_and_objects(demo_root: Path) -> None:
    root = demo_root / "raw/ref-davis"
    folder = root / "davis_text_annotations"
    texts = {}
    for name in ("Davis17_annot1.txt", "Davis17_annot1_full_video.txt"):
        texts[name] = (folder / name).read_bytes().decode("utf-8")
    for name in ("Davis17_annot2.txt", "Davis17_annot2_full_video.txt"):
        data = (folder / name).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        texts[name] = data.decode("latin-1")
        assert any(ord(c) > 127 for c in texts[name])
    sequences = {p.name for p in (root / "DAVIS/JPEGImages/480p").iterdir()}
    assert "classic-car" in sequences and "clasic-car" not in sequences
    fixes = {"clasic-car": "classic-car"}
    for name, text in texts.items():
        keys = []
        for line in text.splitlines():
            match = _LINE.match(line)
            assert match, f"{name}: {line!r}"
            keys.append((match["video"], int(match["obj"])))
        assert ("clasic-car", 1) in keys and not any(v == "classic-car" for v, _ in keys)
        for video, obj in keys:
            seq = fixes.get(video, video)
            first = _png(root / "DAVIS/Annotations_unsupervised/480p" / seq / "00000.png")
            assert (first == obj).any(), (name, video, obj)


# --- MeViS -----------------------------------------------------------------------------


def _check_mevis(meta: dict, masks: dict, frames_root: Path) -> None:
    multi = False
    for vid, entry in meta["videos"].items():
        frames = entry["frames"]
        assert sorted(p.stem for p in (frames_root / vid).glob("*.jpg")) == frames
        height, width = _jpeg_size(frames_root / vid / f"{frames[0]}.jpg")
        for e in entry["expressions"].values():
            assert set(e) == {"exp", "obj_id", "anno_id"} and isinstance(e["exp"], str)
            assert isinstance(e["obj_id"], list) and isinstance(e["anno_id"], list)
            assert len(e["obj_id"]) == len(e["anno_id"]) >= 1
            multi |= len(e["anno_id"]) > 1
            for anno_id in e["anno_id"]:
                per_frame = masks[str(anno_id)]
                assert len(per_frame) == len(frames)
                assert any(rle is not None for rle in per_frame)
                for rle in per_frame:
                    if rle is not None:
                        assert set(rle) == {"size", "counts"} and isinstance(rle["counts"], str)
                        decoded = mask_utils.decode({**rle, "counts": rle["counts"].encode()})
                        assert decoded.shape == (height, width) and decoded.any()
    assert multi
    assert any(rle is None for per_frame in masks.values() for rle in per_frame)


def test_mevis_train_and_valid_u_with_masks(demo_root: Path) -> None:
    for split in ("train", "valid_u"):
        root = demo_root / "raw/mevis" / split
        _check_mevis(
            _json(root / "meta_expressions.json"),
            _json(root / "mask_dict.json"),
            root / "JPEGImages",
        )


def test_mevis_valid_has_no_public_masks_but_heldout_gt(demo_root: Path) -> None:
    root = demo_root / "raw/mevis/valid"
    public = _json(root / "meta_expressions.json")
    assert not (root / "mask_dict.json").exists()
    assert all(
        set(e) == {"exp"} for v in public["videos"].values() for e in v["expressions"].values()
    )
    heldout = demo_root / "heldout/mevis/valid"
    meta = _json(heldout / "meta_expressions.json")
    assert set(meta["videos"]) == set(public["videos"])
    _check_mevis(meta, _json(heldout / "mask_dict.json"), root / "JPEGImages")


# --- RefCOCO family --------------------------------------------------------------------

_FAMILIES = {
    "refcoco": ("refs(unc).p", {"train", "val", "testA", "testB"}),
    "refcoco+": ("refs(unc).p", {"train", "val", "testA", "testB"}),
    "refcocog": ("refs(umd).p", {"train", "val", "test"}),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_refcoco_family_refs_and_instances(demo_root: Path, family: str) -> None:
    root = demo_root / "raw/coco"
    refs_name, splits = _FAMILIES[family]
    refs = _load_refs(root / family / refs_name)
    instances = _json(root / family / "instances.json")
    assert set(instances) == {"images", "annotations", "categories"}
    images = {i["id"]: i for i in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    assert {r["split"] for r in refs} == splits
    kinds = set()
    for ann in anns.values():
        assert {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"} <= set(
            ann
        )
        image = images[ann["image_id"]]
        h, w = image["height"], image["width"]
        kinds.add(type(ann["segmentation"]).__name__)
        rles = mask_utils.frPyObjects(ann["segmentation"], h, w)
        decoded = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
        assert (
            decoded.shape == (h, w) and abs(int(decoded.sum()) - ann["area"]) <= 0.02 * ann["area"]
        )
        x, y, bw, bh = ann["bbox"]
        assert min(x, y) >= 0 and x + bw <= w and y + bh <= h
    assert kinds == {"list", "dict"}  # polygons and RLE
    for image in images.values():
        path = root / "train2014" / image["file_name"]
        assert image["file_name"] == f"COCO_train2014_{image['id']:012d}.jpg"
        assert _jpeg_size(path) == (image["height"], image["width"])
    for ref in refs:
        assert set(ref) >= {
            "ref_id",
            "ann_id",
            "image_id",
            "split",
            "sentences",
            "category_id",
            "file_name",
        }
        assert anns[ref["ann_id"]]["image_id"] == ref["image_id"]
        assert anns[ref["ann_id"]]["category_id"] == ref["category_id"]
        for sent in ref["sentences"]:
            assert set(sent) >= {"sent", "tokens", "sent_id", "raw"}
            assert sent["tokens"] == sent["sent"].split()
    by_image: dict[int, set[str]] = {}
    for ref in refs:
        by_image.setdefault(ref["image_id"], set()).add(ref["split"])
    assert all(len(s) == 1 for s in by_image.values())  # splits are by image


def test_restricted_unpickler_refuses_globals() -> None:
    evil = pickle.dumps(Path("x"), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        _PlainUnpickler(io.BytesIO(evil)).load()


# --- Content and language ---------------------------------------------------------------


def test_expressions_are_unambiguous_and_match_files(demo_root: Path) -> None:
    plan = build_plan(seed=0, scale="tiny")
    videos = [v for d in (plan.ytvos, plan.davis, plan.mevis) for s in d.values() for v in s]
    for video in videos:
        for e in video.expressions:
            assert matching_objects(video.scene.objects, dict(e.attributes)) == e.obj_ids, e
            assert {n for n, _ in e.attributes} <= set(ATTRIBUTES)
    images = {i.image_id: i for i in plan.coco_images}
    for refs in plan.refs.values():
        for ref in refs:
            for e in ref.sentences:
                assert matching_objects(images[ref.image_id].scene.objects, dict(e.attributes)) == (
                    ref.obj_id,
                )
    written = _json(demo_root / "raw/ref-youtube-vos/meta_expressions/train/meta_expressions.json")
    for video in plan.ytvos["train"]:
        texts = {k: e["exp"] for k, e in written["videos"][video.scene.name]["expressions"].items()}
        assert texts == {e.exp_id: e.text for e in video.expressions}


def test_scenes_need_language_and_look_right() -> None:
    plan = build_plan(seed=0, scale="tiny")
    scenes = [v.scene for d in (plan.ytvos, plan.mevis) for s in d.values() for v in s]
    pairs = [(a, b) for s in scenes for a in s.objects for b in s.objects if a.obj_id < b.obj_id]
    assert any(a.shape == b.shape and a.colour != b.colour for a, b in pairs)
    assert any(a.colour == b.colour and a.shape != b.shape for a, b in pairs)
    occluded = False
    for scene in scenes:
        assert all(0.12 <= o.side / min(scene.height, scene.width) <= 0.35 for o in scene.objects)
        for t in range(scene.n_frames):
            labels = render_labels(scene, t)
            for o in scene.objects:
                full = object_mask(o, t, scene.height, scene.width)
                occluded |= bool(full.any() and ((labels == o.obj_id) < full).any())
    assert occluded


def test_catalog_cards_agree_with_the_demo_splits() -> None:
    catalog = Path(__file__).resolve().parents[2] / "datasets"
    cards = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(catalog.glob("*.yaml"))]
    by_name = {c["name"]: c for c in cards}
    assert set(by_name) == {
        "ref-youtube-vos",
        "ref-davis17",
        "mevis",
        "refcoco",
        "refcoco+",
        "refcocog",
    }
    required = {"format", "raw_dir", "splits", "layout", "download", "licence", "citation"}
    assert all(required <= set(c) and c["splits"] for c in cards)
    plan = build_plan(seed=0, scale="tiny")
    assert list(by_name["ref-youtube-vos"]["splits"]) == list(plan.ytvos)
    assert list(by_name["ref-davis17"]["splits"]) == list(plan.davis)
    assert list(by_name["mevis"]["splits"]) == list(plan.mevis)
    for family, refs in plan.refs.items():
        assert set(by_name[family]["splits"]) == {r.split for r in refs}
        assert by_name[family]["raw_dir"] == "coco"


def test_backgrounds_are_not_flat_black(demo_root: Path) -> None:
    for path in sorted((demo_root / "raw/coco/train2014").glob("*.jpg"))[:5]:
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        assert pixels.mean() > 40 and pixels.std() > 5


# --- Determinism, summary, re-runs and the CLI --------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(demo_root: Path, tmp_path: Path) -> None:
    again = generate_demo(tmp_path / "again", seed=0, scale="tiny")
    assert again["datasets"]["ref-youtube-vos"]["videos"] == 7
    other = tmp_path / "other"
    generate_demo(other, seed=1, scale="tiny")
    reference = _tree_hashes(demo_root)
    assert _tree_hashes(tmp_path / "again") == reference
    other_hashes = _tree_hashes(other)
    assert other_hashes != reference
    assert any(n.endswith("meta.json") and h != reference.get(n) for n, h in other_hashes.items())


def test_worker_processes_write_the_same_bytes(demo_root: Path, tmp_path: Path) -> None:
    """Rendering in a process pool (results in plan order) changes no file."""
    generate_demo(tmp_path, seed=0, scale="tiny", workers=2)
    assert _tree_hashes(tmp_path) == _tree_hashes(demo_root)


def test_summary_counts_the_files(demo_root: Path, tmp_path: Path) -> None:
    summary = generate_demo(tmp_path, seed=0, scale="tiny")
    ytvos = summary["datasets"]["ref-youtube-vos"]
    jpegs = list((tmp_path / "raw/ref-youtube-vos").rglob("*.jpg"))
    assert ytvos["frames"] == len(jpegs) and ytvos["bytes"] > 0
    assert summary["datasets"]["coco-train2014"]["images"] == len(
        list((tmp_path / "raw/coco/train2014").iterdir())
    )
    assert summary["total_bytes"] == sum(
        p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()
    )


def test_rerun_replaces_stale_files_and_keeps_others(tmp_path: Path) -> None:
    stale = tmp_path / "raw/ref-youtube-vos/train/JPEGImages/stale/00000.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    keep = tmp_path / "shards/keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("shards")
    generate_demo(tmp_path, seed=0, scale="tiny")
    assert not stale.exists() and keep.read_text() == "shards"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout", "raw", "shards"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": "huge"}, "scale"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"workers": 0}, "workers"),
        ({"workers": True}, "workers"),
    ],
)
def test_generate_demo_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        generate_demo(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo-data", "--out", str(out), "--scale", "tiny", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "ref-youtube-vos" in printed and str(out / "raw") in printed
    assert (out / "raw/ref-davis/DAVIS/ImageSets/2017/val.txt").is_file()
    assert main(["demo-data", "--out", str(tmp_path / "x"), "--scale", "huge"]) == 2
    assert main(["demo-data", "--out", str(tmp_path / "x"), "--seed", "-4"]) == 2
    assert main(["demo-data", "--out", str(tmp_path / "x"), "--workers", "0"]) == 2
    assert "argument --workers: expected a positive integer, got '0'" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["demo-data", "--out", str(a_file), "--scale", "tiny"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
