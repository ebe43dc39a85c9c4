"""Submission zips: layout, safety, atomicity and the checker; PNG reading/writing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refsam.errors import UserError
from refsam.eval.io import read_png, write_binary_png, write_label_png
from refsam.eval.submission import (
    SubmissionZip,
    check_submission,
    member_name,
    zip_prediction_dir,
)


def ytvos_split(demo_root: Path) -> tuple[Path, Path, dict]:
    raw = demo_root / "raw/ref-youtube-vos"
    meta_file = raw / "meta_expressions/valid/meta_expressions.json"
    return meta_file, raw / "valid/JPEGImages", json.loads(meta_file.read_text())["videos"]


def frame_size(jpeg_root: Path, vid: str, frame: str) -> tuple[int, int]:
    with Image.open(jpeg_root / vid / f"{frame}.jpg") as image:
        return image.size[1], image.size[0]


def write_full(
    out: Path, layout: str, meta: dict, jpeg_root: Path, skip: set[str] = frozenset()
) -> None:
    with SubmissionZip(out, layout=layout) as sub:
        for vid, video in sorted(meta.items()):
            if vid in skip:
                continue
            for exp_id in video["expressions"]:
                for frame in video["frames"]:
                    h, w = frame_size(jpeg_root, vid, frame)
                    mask = np.zeros((h, w), bool)
                    mask[: h // 2, : w // 3] = True
                    sub.add(vid, exp_id, frame, mask)


def test_ytvos_zip_is_valid_and_well_formed(demo_root: Path, tmp_path: Path) -> None:
    meta_file, jpegs, meta = ytvos_split(demo_root)
    out = tmp_path / "sub.zip"
    write_full(out, "ytvos", meta, jpegs)
    assert check_submission(out, meta_file, jpegs, layout="ytvos") == []
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert all(n.startswith("Annotations/") for n in names)
        with archive.open(names[0]) as handle, Image.open(handle) as image:
            assert image.mode == "L" and set(np.unique(np.asarray(image))) == {0, 255}
    assert [p.name for p in tmp_path.iterdir()] == ["sub.zip"]  # no temporary left


def test_checker_lists_every_problem(demo_root: Path, tmp_path: Path) -> None:
    meta_file, jpegs, meta = ytvos_split(demo_root)
    videos = sorted(meta)
    out = tmp_path / "sub.zip"
    write_full(out, "ytvos", meta, jpegs, skip={videos[0]})
    vid = videos[1]
    exp_ids = list(meta[vid]["expressions"])
    frames = meta[vid]["frames"]
    # rewrite with one frame missing, one wrong size and one extra file
    with zipfile.ZipFile(out) as src, SubmissionZip(tmp_path / "bad.zip", layout="ytvos") as dst:
        for name in src.namelist():
            _, v, e, f = name[:-4].split("/")
            if (v, e, f) == (vid, exp_ids[0], frames[0]):
                continue
            if (v, e, f) == (vid, exp_ids[0], frames[1]):
                dst.add(v, e, f, np.zeros((7, 9), bool))
                continue
            dst.add_png(v, e, f, src.read(name))
        dst.add("nosuchvideo", "0", "00000", np.zeros((4, 4), bool))
    problems = check_submission(tmp_path / "bad.zip", meta_file, jpegs, layout="ytvos")
    assert f"missing video {videos[0]}" in problems
    missing_exps = [p for p in problems if p.startswith(f"missing expression {videos[0]}/")]
    assert len(missing_exps) == len(meta[videos[0]]["expressions"])
    n_missing_frames = len(meta[videos[0]]["expressions"]) * len(meta[videos[0]]["frames"]) + 1
    assert sum(p.startswith("missing frame") for p in problems) == n_missing_frames
    assert f"missing frame Annotations/{vid}/{exp_ids[0]}/{frames[0]}.png" in problems
    assert any(
        p.startswith(f"Annotations/{vid}/{exp_ids[0]}/{frames[1]}.png: size 9x7") for p in problems
    )
    assert "unexpected file Annotations/nosuchvideo/0/00000.png" in problems
    assert check_submission(out, meta_file, jpegs, layout="ytvos", exclude_videos=[videos[0]]) == []


def test_mevis_layout_from_a_folder(tmp_path: Path) -> None:
    write_binary_png(tmp_path / "pred/vid1/0/00000.png", np.ones((4, 6), bool))
    out = zip_prediction_dir(tmp_path / "pred", tmp_path / "mevis.zip", layout="mevis")
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["vid1/0/00000.png"]
    assert member_name("ytvos", "v", "1", "00005") == "Annotations/v/1/00005.png"


@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", "", "a\\b", "/abs"])
def test_unsafe_ids_are_rejected_and_nothing_is_written(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "sub.zip"
    with pytest.raises(UserError, match="unsafe"), SubmissionZip(out, layout="mevis") as sub:
        sub.add("ok", "0", "00000", np.zeros((2, 2), bool))
        sub.add(bad, "0", "00000", np.zeros((2, 2), bool))
    assert list(tmp_path.iterdir()) == []  # neither the zip nor its temporary


def test_failed_rewrite_keeps_the_old_zip(tmp_path: Path) -> None:
    out = tmp_path / "sub.zip"
    with SubmissionZip(out, layout="mevis") as sub:
        sub.add("v", "0", "00000", np.ones((2, 2), bool))
    before = out.read_bytes()
    with pytest.raises(RuntimeError), SubmissionZip(out, layout="mevis") as sub:
        sub.add("v", "0", "00000", np.zeros((2, 2), bool))
        raise RuntimeError("crash while writing")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip"]


def test_png_round_trips(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [255, 3, 0]], np.uint8)
    write_label_png(tmp_path / "p.png", labels)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_png(tmp_path / "p.png"), labels)
    write_binary_png(tmp_path / "b.png", labels > 0)
    np.testing.assert_array_equal(read_png(tmp_path / "b.png"), np.where(labels > 0, 255, 0))
    grey_rgb = np.repeat((labels * 10)[..., None], 3, axis=2)
    Image.fromarray(grey_rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_png(tmp_path / "rgb.png"), labels * 10)
    colour = grey_rgb.copy()
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match="colour.png: colour RGB PNG"):
        read_png(tmp_path / "colour.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="junk.png: cannot read PNG"):
        read_png(tmp_path / "junk.png")
    with pytest.raises(UserError, match="missing.png: mask file not found"):
        read_png(tmp_path / "missing.png")
