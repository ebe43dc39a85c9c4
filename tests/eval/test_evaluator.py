"""``evaluate``: PNG layouts, scores equal to re-scoring the written PNGs, zips, tables."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from refsam.cli import main
from refsam.config import RefSAMConfig, load_config
from refsam.data.loader import iter_eval_videos
from refsam.errors import DataError, UserError
from refsam.eval.evaluator import EvalResult, evaluate, evaluate_model
from refsam.eval.families.mevis import score_mevis
from refsam.eval.families.ref_davis17 import score_ref_davis17
from refsam.eval.families.ref_youtube_vos import score_ytvos
from refsam.eval.io import read_png
from refsam.eval.submission import check_submission
from refsam.train.state import build_model, save_model_checkpoint

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def shards(tiny_shards: Path) -> Path:
    """The session's tiny demo shards (tests/conftest.py; read only here)."""
    return tiny_shards


@pytest.fixture(scope="module")
def cfg(shards: Path, demo_root: Path) -> RefSAMConfig:
    return load_config(CONFIG, [f"data.shards_root={shards}", f"data.heldout_root={demo_root / 'heldout'}",
                                "tracking.enabled=false"])  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(cfg: RefSAMConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # a bias towards foreground so that the untrained masks are not empty
        model.mask_decoder.output_hypernetworks_mlps[0].layers[-1].bias.add_(0.5)
    return save_model_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "model.pt")


def _run(
    checkpoint: Path, shards: Path, demo_root: Path, out: Path, dataset: str, split: str
) -> EvalResult:
    return evaluate(checkpoint, dataset, split, shards=shards, out=out, heldout=demo_root / "heldout",
                    device="cpu")  # fmt: skip


def _check_subsets(result: EvalResult, labels_file: Path) -> None:
    """J, F, J&F and n per subset equal the means over the table's rows of that subset, the
    subset of a row read from ``labels_file`` (Ref-DAVIS17: set k, object o is ``k_o``)."""
    labels = json.loads(labels_file.read_text())
    with result.per_sequence_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if "set" in row:
            video, exp_id = row["sequence"], f"{row['set'].removeprefix('anno_')}_{row['object']}"
            assert row["exp_id"] == exp_id
        else:
            video, exp_id = row["video"], row["exp_id"]
        assert row["subset"] == labels[video][exp_id]
        groups.setdefault(labels[video][exp_id], []).append(row)
    assert set(groups) == {"appearance", "motion"}  # both occur in the tiny eval splits
    for name, members in groups.items():
        j = float(np.mean([float(r["J"]) for r in members]))
        f = float(np.mean([float(r["F"]) for r in members]))
        assert result.metrics[f"n/{name}"] == len(members)
        assert result.metrics[f"J/{name}"] == pytest.approx(j, abs=1e-12)
        assert result.metrics[f"F/{name}"] == pytest.approx(f, abs=1e-12)
        assert result.metrics[f"J&F/{name}"] == pytest.approx((j + f) / 2, abs=1e-12)
    assert json.loads(result.metrics_json.read_text())["metrics"]["n/motion"] == len(
        groups["motion"]
    )


@pytest.mark.slow
def test_ytvos_valid_layout_scores_and_zip(
    checkpoint: Path, shards: Path, demo_root: Path, tmp_path: Path
) -> None:
    result = _run(checkpoint, shards, demo_root, tmp_path, "ref-youtube-vos", "valid")
    videos = list(iter_eval_videos(shards / "ref-youtube-vos" / "valid"))
    n_expressions = sum(len(v.expressions) for v in videos)
    for video in videos:
        for exp in video.expressions:
            folder = tmp_path / "predictions" / "Annotations" / video.video / exp.exp_id
            assert sorted(p.stem for p in folder.glob("*.png")) == sorted(video.frame_names)
            assert read_png(folder / f"{video.frame_names[0]}.png").shape == (
                video.height,
                video.width,
            )
    heldout = demo_root / "heldout" / "ref-youtube-vos" / "valid"
    meta = json.loads((heldout / "meta_expressions.json").read_text())
    meta["videos"] = {v.video: meta["videos"][v.video] for v in videos}  # competition videos
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    rescored = score_ytvos(tmp_path / "predictions", heldout, tmp_path / "meta.json")
    for key in ("J", "F", "J&F"):
        assert result.metrics[key] == pytest.approx(rescored.summary[key], abs=1e-9)
    assert result.metrics["n_expressions"] == n_expressions
    raw = demo_root / "raw" / "ref-youtube-vos"
    assert result.submission is not None
    problems = check_submission(result.submission, raw / "meta_expressions" / "valid" / "meta_expressions.json",
                                raw / "valid" / "JPEGImages", layout="ytvos",
                                exclude_videos=_test_videos(raw))  # fmt: skip
    assert problems == []
    with result.per_sequence_csv.open() as handle:
        assert len(list(csv.DictReader(handle))) == n_expressions
    record = json.loads(result.metrics_json.read_text())
    assert record["metrics"]["J&F"] == pytest.approx(result.metrics["J&F"])
    assert len(result.overlays) == min(3, len(videos)) and all(p.is_file() for p in result.overlays)
    _check_subsets(result, heldout / "subsets.json")


def _test_videos(raw: Path) -> list[str]:
    path = raw / "meta_expressions" / "test" / "meta_expressions.json"
    return list(json.loads(path.read_text())["videos"]) if path.is_file() else []


@pytest.mark.slow
def test_ref_davis17_four_sets_match_the_folder_protocol(
    checkpoint: Path, shards: Path, demo_root: Path, tmp_path: Path
) -> None:
    result = _run(checkpoint, shards, demo_root, tmp_path, "ref-davis17", "valid")
    for k in range(4):
        assert (tmp_path / "predictions" / f"anno_{k}").is_dir()
    davis_root = demo_root / "raw" / "ref-davis" / "DAVIS"
    rescored = score_ref_davis17(tmp_path / "predictions", davis_root)
    for key in ("J", "F", "J&F"):
        assert result.metrics[key] == pytest.approx(rescored.summary[key], abs=1e-9)
    assert result.metrics["n_sets"] == 4
    assert result.submission is None
    labels = np.unique(read_png(next((tmp_path / "predictions" / "anno_0").rglob("*.png"))))
    assert set(labels.tolist()) <= set(range(0, 21))  # object ids, background 0
    _check_subsets(result, demo_root / "heldout" / "ref-davis17" / "valid" / "subsets.json")


@pytest.mark.slow
def test_mevis_heldout_and_refcoco(
    checkpoint: Path, shards: Path, demo_root: Path, tmp_path: Path
) -> None:
    mevis = _run(checkpoint, shards, demo_root, tmp_path / "mevis", "mevis", "valid")
    rescored = score_mevis(
        tmp_path / "mevis" / "predictions", demo_root / "heldout" / "mevis" / "valid"
    )
    assert mevis.metrics["J&F"] == pytest.approx(rescored.summary["J&F"], abs=1e-9)
    assert mevis.submission is not None and mevis.submission.name == "submission.zip"
    _check_subsets(mevis, demo_root / "heldout" / "mevis" / "valid" / "subsets.json")
    coco = _run(checkpoint, shards, demo_root, tmp_path / "coco", "refcoco", "val")
    assert {"mIoU", "oIoU", "prec@0.5"} <= set(coco.metrics)
    assert not any("/" in key for key in coco.metrics)  # no subsets file: no subset metrics
    n_sentences = sum(len(v.expressions) for v in iter_eval_videos(shards / "refcoco" / "val"))
    assert len(list((tmp_path / "coco" / "predictions").glob("*.png"))) == n_sentences


def test_one_encoder_pass_per_frame_for_all_expressions(
    cfg: RefSAMConfig, shards: Path, tmp_path: Path
) -> None:
    model = build_model(cfg)
    calls = []
    model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    result = evaluate_model(model, "ref-youtube-vos", "valid", shards=shards, out=tmp_path, device="cpu",
                            overlays=0, progress=False)  # fmt: skip
    frames = sum(len(v.frame_names) for v in iter_eval_videos(shards / "ref-youtube-vos" / "valid"))
    assert result.frames == frames
    assert len(calls) == 0 or len(calls) == frames  # the block-wise path bypasses forward()
    assert "J&F" not in result.metrics  # no held-out GT given: predictions only


def test_subset_metrics_only_with_a_subsets_file(
    cfg: RefSAMConfig, shards: Path, demo_root: Path, tmp_path: Path
) -> None:
    """Held-out GT without ``subsets.json``: J&F but no subset metrics or column; with it,
    both; a malformed file fails (naming it) before any prediction is written."""
    model = build_model(cfg)
    held = tmp_path / "heldout" / "ref-youtube-vos" / "valid"
    shutil.copytree(demo_root / "heldout" / "ref-youtube-vos" / "valid", held,
                    ignore=shutil.ignore_patterns("subsets.json"))  # fmt: skip

    def run(name: str) -> EvalResult:
        return evaluate_model(model, "ref-youtube-vos", "valid", shards=shards, out=tmp_path / name,
                              heldout=tmp_path / "heldout", device="cpu", overlays=0, max_videos=1,
                              progress=False)  # fmt: skip

    plain = run("plain")
    assert "J&F" in plain.metrics and not any("/" in key for key in plain.metrics)
    assert "subset" not in plain.per_sequence_csv.read_text().splitlines()[0].split(",")
    shutil.copy(demo_root / "heldout" / "ref-youtube-vos" / "valid" / "subsets.json", held)
    tagged = run("tagged")
    assert tagged.metrics["J&F"] == plain.metrics["J&F"]
    assert (
        tagged.metrics["n/appearance"] + tagged.metrics["n/motion"]
        == tagged.metrics["n_expressions"]
    )
    assert "subset" in tagged.per_sequence_csv.read_text().splitlines()[0].split(",")
    (held / "subsets.json").write_text('{"some-video": 1}')
    with pytest.raises(DataError, match=r"subsets\.json: \['some-video'\] must map"):
        run("broken")
    assert not list((tmp_path / "broken" / "predictions").rglob("*.png"))


def test_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="no shards of ref-davis17/valid"):
        evaluate(checkpoint, "ref-davis17", "valid", shards=tmp_path, out=tmp_path / "o")
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "kitti", "--split", "valid",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    assert "kitti" in capsys.readouterr().err
    args = ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--dataset", "ref-davis17",
            "--split", "valid", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def _foreground(pred_dir: Path) -> int:
    return sum(int((read_png(p) > 0).sum()) for p in sorted(pred_dir.rglob("*.png")))


def test_threshold_option(
    checkpoint: Path, shards: Path, demo_root: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """``--threshold`` overrides the checkpoint config's mask threshold and is recorded."""
    counts = {}
    for threshold in ("0.0001", "0.9999"):
        out = tmp_path / threshold
        args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "ref-youtube-vos",
                "--split", "valid", "--shards", str(shards), "--heldout", str(demo_root / "heldout"),
                "--out", str(out), "--device", "cpu", "--max-videos", "1", "--threshold", threshold]  # fmt: skip
        assert main(args) == 0
        assert f"mask threshold {float(threshold):g}" in capsys.readouterr().out
        assert json.loads((out / "metrics.json").read_text())["mask_threshold"] == float(threshold)
        counts[threshold] = _foreground(out / "predictions")
    assert counts["0.0001"] > counts["0.9999"]
    default = evaluate(checkpoint, "ref-youtube-vos", "valid", shards=shards, out=tmp_path / "d",
                       heldout=demo_root / "heldout", device="cpu", max_videos=1)  # fmt: skip
    assert default.threshold == 0.5  # configs/smoke.yaml keeps the default
    assert counts["0.0001"] >= _foreground(tmp_path / "d" / "predictions") >= counts["0.9999"]
    for bad in ("1", "0", "-0.2", "half"):
        args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "ref-davis17",
                "--split", "valid", "--out", str(tmp_path / "o"), "--threshold", bad]  # fmt: skip
        assert main(args) == 2
        assert f"--threshold: expected a value in (0, 1), got {bad!r}" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"mask threshold 1.5: expected a value in \(0, 1\)"):
        evaluate(checkpoint, "ref-davis17", "valid", shards=shards, out=tmp_path / "o",
                 threshold=1.5)  # fmt: skip
