"""``refsam score`` end to end on PNG layouts: demo data and synthetic folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refsam.cli import main
from refsam.eval.io import list_pngs, read_png, write_binary_png, write_label_png


def score(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["score", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1, captured.out  # one JSON object on stdout
    return json.loads(lines[0])


def score_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["score", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def copy_without_void(src: Path, dst: Path, shift: int = 0) -> None:
    for seq in sorted(p for p in src.iterdir() if p.is_dir()):
        for name in list_pngs(seq):
            labels = read_png(seq / f"{name}.png")
            labels = np.where(labels == 255, 0, labels).astype(np.uint8)
            write_label_png(dst / seq.name / f"{name}.png", np.roll(labels, shift, axis=1))


DAVIS_KEYS = {
    "protocol",
    "J",
    "F",
    "J&F",
    "J_recall",
    "J_decay",
    "F_recall",
    "F_decay",
    "n_objects",
}


# ---------------------------------------------------------------- demo data layouts


def test_davis_demo_gt_against_itself_and_perturbed(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    davis_root = demo_root / "raw/ref-davis/DAVIS"
    annotations = davis_root / "Annotations_unsupervised/480p"
    copy_without_void(annotations, tmp_path / "perfect")
    copy_without_void(annotations, tmp_path / "shifted", shift=6)
    perfect = score(
        capsys,
        "--pred",
        str(tmp_path / "perfect"),
        "--gt",
        str(davis_root),
        "--protocol",
        "davis",
        "--out",
        str(tmp_path / "out"),
    )
    assert set(perfect) == DAVIS_KEYS
    assert perfect["J&F"] == 1.0 and perfect["J_decay"] == 0.0 and perfect["n_objects"] > 0
    shifted = score(
        capsys, "--pred", str(tmp_path / "shifted"), "--gt", str(annotations), "--protocol", "davis"
    )
    assert 0 < shifted["J&F"] < 1 and 0 <= shifted["J"] <= 1 and 0 <= shifted["F"] <= 1
    with (tmp_path / "out/davis.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == perfect["n_objects"] and float(rows[0]["J"]) == 1.0
    semi = score(
        capsys,
        "--pred",
        str(tmp_path / "perfect"),
        "--gt",
        str(davis_root),
        "--protocol",
        "davis-semi",
    )
    assert semi["J&F"] == 1.0


def test_ref_davis17_demo(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = demo_root / "raw/ref-davis/DAVIS/Annotations_unsupervised/480p"
    for index in range(4):
        copy_without_void(
            annotations, tmp_path / "pred" / f"anno_{index}", shift=0 if index < 2 else 4
        )
    out = score(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(demo_root / "raw/ref-davis"),
        "--protocol",
        "ref-davis17",
        "--out",
        str(tmp_path / "out"),
    )
    assert 0.5 < out["J&F"] < 1 and out["protocol"] == "ref-davis17"
    assert (tmp_path / "out/ref-davis17_anno_3.csv").is_file()
    shutil.rmtree(tmp_path / "pred/anno_2")
    assert "anno_2" in score_error(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(annotations),
        "--protocol",
        "ref-davis17",
    )


def write_mevis_predictions(split: Path, pred: Path) -> None:
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    masks = json.loads((split / "mask_dict.json").read_text())
    for vid, video in meta.items():
        for exp_id, expression in video["expressions"].items():
            for index, frame in enumerate(video["frames"]):
                union = None
                for anno in expression["anno_id"]:
                    rle = masks[str(anno)][index]
                    if rle:
                        m = mask_utils.decode(
                            {"size": rle["size"], "counts": rle["counts"].encode()}
                        )
                        union = m if union is None else union | m
                if union is None:  # absent everywhere: size from any mask of the video
                    size = next(r["size"] for a in masks.values() for r in a if r)
                    union = np.zeros(size, np.uint8)
                write_binary_png(pred / vid / exp_id / f"{frame}.png", union)


def test_mevis_demo(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = demo_root / "heldout/mevis/valid"
    write_mevis_predictions(split, tmp_path / "pred")
    perfect = score(
        capsys, "--pred", str(tmp_path / "pred"), "--gt", str(split), "--protocol", "mevis"
    )
    assert perfect["J&F"] == 1.0
    victim = sorted((tmp_path / "pred").iterdir())[0]
    n_exps = len(list(victim.iterdir()))
    shutil.rmtree(victim)  # a missing video folder scores 0 for its expressions
    partial = score(
        capsys, "--pred", str(tmp_path / "pred"), "--gt", str(split), "--protocol", "mevis"
    )
    n = perfect["n_objects"]
    assert partial["J"] == pytest.approx((n - n_exps) / n)


def test_ytvos_demo(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = demo_root / "heldout/ref-youtube-vos/valid"
    meta = json.loads((gt / "meta_expressions.json").read_text())["videos"]
    pred = tmp_path / "pred/Annotations"
    for vid in sorted(p.name for p in (gt / "Annotations").iterdir()):
        for exp_id, expression in meta[vid]["expressions"].items():
            for frame in meta[vid]["frames"]:
                labels = read_png(gt / "Annotations" / vid / f"{frame}.png")
                write_binary_png(
                    pred / vid / exp_id / f"{frame}.png", labels == int(expression["obj_id"])
                )
    out = score(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(gt),
        "--protocol",
        "ytvos",
        "--meta",
        str(gt / "meta_expressions.json"),
    )
    assert out["J&F"] == 1.0 and out["n_objects"] > 0
    victim = next(pred.iterdir())
    first_exp = sorted(victim.iterdir())[0]
    frame = sorted(first_exp.iterdir())[0]
    frame.unlink()
    err = score_error(
        capsys, "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--protocol", "ytvos"
    )
    assert str(frame) in err and "missing" in err


# ---------------------------------------------------------------- synthetic layouts and errors


def make_davis(root: Path, frames: int = 4, size: tuple[int, int] = (30, 40)) -> np.ndarray:
    labels = np.zeros((frames, *size), np.uint8)
    labels[:, 5:15, 5:15] = 1
    labels[:, 18:28, 20:35] = 2
    for t in range(frames):
        write_label_png(root / "seq" / f"{t:05d}.png", labels[t])
    return labels


def test_zero_255_predictions_and_palette_gt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = make_davis(tmp_path / "gt")
    for t in range(len(labels)):  # one object as a 0/255 grey PNG: labels 255 are rejected
        write_binary_png(tmp_path / "pred/seq" / f"{t:05d}.png", labels[t] == 1)
    err = score_error(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--protocol",
        "davis-semi",
    )
    assert "00001.png" in err and "label 255" in err


def test_missing_frame_wrong_size_and_extra_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = make_davis(tmp_path / "gt")
    pred = tmp_path / "pred"
    for t in range(len(labels)):
        write_label_png(pred / "seq" / f"{t:05d}.png", labels[t])
    args = ["--pred", str(pred), "--gt", str(tmp_path / "gt"), "--protocol", "davis-semi"]
    assert score(capsys, *args)["J&F"] == 1.0
    write_label_png(pred / "seq/00002.png", np.where(labels[2] == 2, 3, labels[2]).astype(np.uint8))
    assert "00002.png: label 3 but the ground truth has 2 object(s)" in score_error(capsys, *args)
    write_label_png(pred / "seq/00002.png", labels[2][:, :-1])
    assert "00002.png: mask size 39x30 (WxH), expected 40x30" in score_error(capsys, *args)
    (pred / "seq/00002.png").unlink()
    assert "00002.png: prediction frame missing" in score_error(capsys, *args)
    shutil.rmtree(pred / "seq")
    assert "prediction sequence folder not found" in score_error(capsys, *args)


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = score_error(
        capsys, "--pred", str(tmp_path), "--gt", str(tmp_path / "nope"), "--protocol", "davis"
    )
    assert "nope" in err
    assert "invalid choice" in score_error(
        capsys, "--pred", "a", "--gt", "b", "--protocol", "kitti"
    )


def test_refcoco_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = np.zeros((20, 30), bool)
    gt[2:12, 3:13] = True
    write_binary_png(tmp_path / "gt/101.png", gt)
    write_binary_png(tmp_path / "gt/102.png", gt)
    write_binary_png(tmp_path / "pred/101.png", gt)
    write_binary_png(tmp_path / "pred/102.png", np.zeros_like(gt))
    out = score(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--protocol",
        "refcoco",
        "--out",
        str(tmp_path / "out"),
    )
    assert out == {
        "protocol": "refcoco",
        "mIoU": 0.5,
        "oIoU": 0.5,
        "prec@0.5": 0.5,
        "prec@0.6": 0.5,
        "prec@0.7": 0.5,
        "prec@0.8": 0.5,
        "prec@0.9": 0.5,
        "n_sentences": 2,
    }
    (tmp_path / "pred/102.png").unlink()
    assert "102.png: prediction mask missing" in score_error(
        capsys,
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--protocol",
        "refcoco",
    )


def test_sequences_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = make_davis(tmp_path / "gt")
    for t in range(len(labels)):
        write_label_png(tmp_path / "pred/seq" / f"{t:05d}.png", labels[t])
    (tmp_path / "gt/other").mkdir()  # a GT sequence without predictions, left out below
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--protocol", "davis"]
    assert score(capsys, *args, "--sequences", "seq")["n_objects"] == 2
    (tmp_path / "list.txt").write_text("seq\n\n")
    assert score(capsys, *args, "--sequences", str(tmp_path / "list.txt"))["J&F"] == 1.0
    assert "ground-truth sequence 'nosuch'" in score_error(capsys, *args, "--sequences", "nosuch")
    assert "other" in score_error(capsys, *args)  # by default every GT sequence is scored


def test_mevis_bad_frames_are_errors(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = demo_root / "heldout/mevis/valid"
    write_mevis_predictions(split, tmp_path / "pred")
    first = sorted((tmp_path / "pred").glob("*/*/*.png"))[0]
    write_binary_png(first, np.zeros((5, 5), bool))
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(split), "--protocol", "mevis"]
    assert f"{first}: mask size 5x5" in score_error(capsys, *args)
    first.unlink()  # a missing frame in an existing expression folder is a layout error
    assert f"{first}: prediction frame missing" in score_error(capsys, *args)
