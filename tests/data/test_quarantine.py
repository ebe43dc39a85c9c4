"""Corrupted copies of the demo datasets: every bad item is quarantined with the right
reason (by unit), every good item is still in the shards; --strict turns it into an error."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refsam.cli import main
from refsam.data.index import read_index, read_quarantine
from refsam.data.shards import ingest
from refsam.data.sources import raw_dir_name
from refsam.errors import DataError


def _copy(demo_raw: Path, tmp_path: Path, dataset: str) -> Path:
    target = tmp_path / "raw" / raw_dir_name(dataset)
    shutil.copytree(demo_raw / raw_dir_name(dataset), target)
    return target


def _pairs(shard_dir: Path) -> set[tuple[str, str]]:
    return {(r["video"], r["exp_id"]) for r in read_index(shard_dir).to_pylist()}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _found(items: list[dict], reason: str, unit: str, video: str, **ids: str) -> bool:
    return any(
        q["reason"] == reason
        and q["unit"] == unit
        and q["video"] == video
        and all(q[k] == v for k, v in ids.items())
        for q in items
    )


def _run(
    dataset: str, split: str, root: Path, out: Path
) -> tuple[set[tuple[str, str]], list[dict]]:
    summary = ingest(dataset, split, root, out, shard_size=2, progress=False)
    shard_dir = out / dataset / split
    items = read_quarantine(shard_dir)
    assert summary.quarantined == len(items) > 0
    return _pairs(shard_dir), items


def test_ref_youtube_vos(demo_raw: Path, ingested, tmp_path: Path) -> None:
    root = _copy(demo_raw, tmp_path, "ref-youtube-vos")
    clean = _pairs(ingested[0] / "ref-youtube-vos" / "train")
    meta_path = root / "meta_expressions" / "train" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    v0, v1, v2 = sorted(meta["videos"])[:3]
    frames0 = meta["videos"][v0]["frames"]
    _truncate(root / "train" / "JPEGImages" / v0 / f"{frames0[1]}.jpg")  # truncated JPEG → video
    png = root / "train" / "Annotations" / v1 / f"{meta['videos'][v1]['frames'][0]}.png"
    Image.fromarray(np.zeros((7, 9), dtype=np.uint8), mode="P").save(
        png
    )  # mask of wrong size → video
    exps = meta["videos"][v2]["expressions"]
    first, second = sorted(exps, key=int)[:2]
    exps[second]["exp"] = "   "  # empty expression → expression
    exps["99"] = {
        "exp": "the ghost",
        "obj_id": "9",
    }  # object never present → object + its expression
    exps["DUPLICATE"] = {
        "exp": "a second expression with the same id",
        "obj_id": exps[first]["obj_id"],
    }
    obj_meta = json.loads((root / "train" / "meta.json").read_text())
    obj_meta["videos"][v2]["objects"]["9"] = {"category": "ghost", "frames": []}
    (root / "train" / "meta.json").write_text(json.dumps(obj_meta))
    meta_path.write_text(
        json.dumps(meta).replace('"DUPLICATE"', f'"{first}"')
    )  # duplicate id → later one
    pairs, items = _run("ref-youtube-vos", "train", root, tmp_path / "out")
    assert _found(items, "bad_frame", "video", v0)
    assert _found(items, "mask_size", "video", v1)
    assert _found(items, "empty_text", "expression", v2, exp_id=second)
    assert _found(items, "object_absent", "object", v2, obj_id="9")
    assert _found(items, "object_quarantined", "expression", v2, exp_id="99")
    assert _found(items, "duplicate_id", "expression", v2, exp_id=first)
    expected = {p for p in clean if p[0] not in (v0, v1)} - {(v2, second)}
    assert pairs == expected  # every good item kept (the first of the duplicates included)
    with pytest.raises(DataError, match="quarantined.*--strict"):
        ingest("ref-youtube-vos", "train", root, tmp_path / "strict", strict=True, progress=False)


def test_ref_davis17(demo_raw: Path, ingested, tmp_path: Path) -> None:
    root = _copy(demo_raw, tmp_path, "ref-davis17")
    clean = _pairs(ingested[0] / "ref-davis17" / "valid")
    d0, d1, d2 = sorted({v for v, _ in clean})[:3]
    next(
        iter(sorted((root / "DAVIS" / "Annotations_unsupervised" / "480p" / d0).glob("*.png")))
    ).unlink()
    text = root / "davis_text_annotations"
    annot1 = (text / "Davis17_annot1.txt").read_bytes().splitlines()
    line = next(i for i, raw in enumerate(annot1) if raw.startswith(f"{d1} 1 ".encode()))
    annot1[line] = f'{d1} 1 "caf'.encode() + b"\xe9\xff" + b' bad bytes"'  # not UTF-8 → expression
    annot1 += [f'{d2} 9 "a ghost that no mask shows"'.encode(), f"{d2} 2 missing quotes".encode()]
    (text / "Davis17_annot1.txt").write_bytes(b"\n".join(annot1) + b"\n")
    annot2 = (text / "Davis17_annot2.txt").read_bytes().splitlines()
    dup = next(raw for raw in annot2 if raw.startswith(f"{d1} 2 ".encode()))
    (text / "Davis17_annot2.txt").write_bytes(
        b"\n".join([*annot2, dup.replace(b'"', b'"again ', 1)]) + b"\n"
    )
    pairs, items = _run("ref-davis17", "valid", root, tmp_path / "out")
    assert _found(items, "missing_mask", "video", d0)
    assert _found(items, "bad_encoding", "expression", d1)
    assert _found(items, "duplicate_id", "expression", d1, exp_id="2_2")
    assert _found(items, "object_absent", "object", d2, obj_id="9")
    assert _found(items, "object_quarantined", "expression", d2, exp_id="0_9")
    assert _found(items, "bad_line", "expression", d2)
    assert pairs == {p for p in clean if p[0] != d0} - {(d1, "0_1")}


def test_mevis(demo_raw: Path, ingested, tmp_path: Path) -> None:
    root = _copy(demo_raw, tmp_path, "mevis")
    clean = _pairs(ingested[0] / "mevis" / "train")
    meta = json.loads((root / "train" / "meta_expressions.json").read_text())
    m0, m1 = sorted(meta["videos"])[:2]
    (
        root / "train" / "JPEGImages" / m0 / f"{meta['videos'][m0]['frames'][-1]}.jpg"
    ).unlink()  # missing frame
    masks = json.loads((root / "train" / "mask_dict.json").read_text())
    annos = sorted(
        {str(a) for e in meta["videos"][m1]["expressions"].values() for a in e["anno_id"]}, key=int
    )
    wrong, absent = annos[0], annos[1]
    position = next(i for i, rle in enumerate(masks[wrong]) if rle is not None)
    masks[wrong][position]["size"] = [
        masks[wrong][position]["size"][0] + 1,
        masks[wrong][position]["size"][1],
    ]
    masks[absent] = [None] * len(masks[absent])
    (root / "train" / "mask_dict.json").write_text(json.dumps(masks))
    pairs, items = _run("mevis", "train", root, tmp_path / "out")
    assert _found(items, "missing_frame", "video", m0)
    assert _found(items, "rle_size", "object", m1, obj_id=wrong)
    assert _found(items, "object_absent", "object", m1, obj_id=absent)
    lost = {
        (m1, k)
        for k, e in meta["videos"][m1]["expressions"].items()
        if {str(a) for a in e["anno_id"]} & {wrong, absent}
    }
    assert lost and all(
        _found(items, "object_quarantined", "expression", m1, exp_id=k) for _, k in lost
    )
    assert pairs == {p for p in clean if p[0] != m0} - lost


def test_refcoco(demo_raw: Path, ingested, tmp_path: Path) -> None:
    root = _copy(demo_raw, tmp_path, "refcoco")
    clean = _pairs(ingested[0] / "refcoco" / "train")
    refs_path = root / "refcoco" / "refs(unc).p"
    refs = [r for r in pickle.loads(refs_path.read_bytes())]
    train = [r for r in refs if r["split"] == "train"]
    images = sorted({r["image_id"] for r in train})
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    by_id = {i["id"]: i for i in instances["images"]}
    _truncate(root / "train2014" / by_id[images[0]]["file_name"])  # truncated JPEG → image
    other = [r for r in train if r["image_id"] != images[0]]
    empty_ref, rle_ref = other[0], next(r for r in other if r["image_id"] != other[0]["image_id"])
    empty_ref["sentences"][0]["sent"] = ""  # empty sentence → expression
    dup_ref = next(
        r for r in other if r["image_id"] not in (empty_ref["image_id"], rle_ref["image_id"])
    )
    dup_sent = dict(dup_ref["sentences"][0], sent="a duplicated sentence id")
    dup_ref["sentences"].append(dup_sent)  # duplicate sent_id → the later one
    ann = next(a for a in instances["annotations"] if a["id"] == rle_ref["ann_id"])
    image = by_id[rle_ref["image_id"]]
    ann["segmentation"] = {
        "size": [image["height"] + 3, image["width"]],
        "counts": [0, 5],
    }  # RLE of wrong size
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    pairs, items = _run("refcoco", "train", root, tmp_path / "out")
    v = str
    assert _found(items, "bad_frame", "video", v(images[0]))
    assert _found(
        items,
        "empty_text",
        "expression",
        v(empty_ref["image_id"]),
        exp_id=v(empty_ref["sentences"][0]["sent_id"]),
    )
    assert _found(
        items, "duplicate_id", "expression", v(dup_ref["image_id"]), exp_id=v(dup_sent["sent_id"])
    )
    assert _found(items, "rle_size", "object", v(rle_ref["image_id"]), obj_id=v(rle_ref["ann_id"]))
    lost = {
        (v(images[0]), v(s["sent_id"]))
        for r in train
        if r["image_id"] == images[0]
        for s in r["sentences"]
    }
    lost |= {(v(empty_ref["image_id"]), v(empty_ref["sentences"][0]["sent_id"]))}
    lost |= {
        (v(r["image_id"]), v(s["sent_id"]))
        for r in train
        if r["ann_id"] == rle_ref["ann_id"]
        for s in r["sentences"]
    }
    assert pairs == clean - lost


def test_cli_prints_reason_table_and_strict_fails(
    demo_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(demo_raw, tmp_path, "mevis")
    meta = json.loads((root / "train" / "meta_expressions.json").read_text())
    m0 = sorted(meta["videos"])[0]
    frame = root / "train" / "JPEGImages" / m0 / f"{meta['videos'][m0]['frames'][0]}.jpg"
    frame.write_bytes(b"\xff\xd8" + io.BytesIO(b"not really a jpeg").read())
    args = [
        "ingest",
        "--dataset",
        "mevis",
        "--split",
        "train",
        "--raw",
        str(root),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "quarantined items by reason:" in out and "bad_frame" in out
    assert main([*args, "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err
