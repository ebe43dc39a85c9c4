"""Evaluation families: the registry, and a dataset family added from outside the package
(tests/eval/family_fixture.py) that ingests, evaluates and scores end to end."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from refsam.config import DataSplit, RefSAMConfig, load_config
from refsam.data.shards import ingest
from refsam.data.sources import dataset_names
from refsam.errors import ConfigError, UserError
from refsam.eval import protocols
from refsam.eval.evaluator import evaluate
from refsam.eval.families import (
    ExpressionFamily,
    evaluated_datasets,
    family_for,
    folder_protocols,
    register_family,
    unregister_family,
    zip_format,
)
from refsam.eval.layouts import protocol_names, score_dirs
from refsam.eval.prediction_layout import ExpressionLayout
from refsam.eval.submission import check_submission, member_name
from refsam.train.state import build_model, save_model_checkpoint
from tests.eval import family_fixture as toy

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_every_dataset_has_one_family() -> None:
    assert evaluated_datasets() == dataset_names()
    assert family_for("refcoco") is family_for("refcocog") is family_for("refcoco+")
    assert family_for("ref-davis17").layout.n_sets == 4  # the reader's four text files
    assert set(folder_protocols()) == {"ref-davis17", "mevis", "ytvos", "refcoco"}
    assert protocol_names()[:2] == ["davis", "davis-semi"]
    with pytest.raises(UserError, match=r"unknown dataset 'kitti'; expected one of mevis, "):
        family_for("kitti")
    with pytest.raises(UserError, match=r"unknown protocol 'kitti'; expected one of davis, "):
        score_dirs("kitti", Path("p"), Path("g"))
    with pytest.raises(
        UserError, match=r"unknown submission layout 'x'; expected one of mevis, ytvos"
    ):
        member_name("x", "v", "0", "00000")


def test_one_layout_writes_reads_and_names_zip_members(tmp_path: Path) -> None:
    ytvos = family_for("ref-youtube-vos")
    assert zip_format("ytvos").layout == ytvos.layout
    assert member_name("ytvos", "v", "1", "00005") == "Annotations/v/1/00005.png"
    assert member_name("mevis", "v", "1", "00005") == "v/1/00005.png"
    masks = np.zeros((2, 3, 4), bool)
    masks[1, 1:, 2:] = True
    ytvos.layout.write(tmp_path, "v", "1", ["a", "b"], masks)
    assert (tmp_path / "Annotations/v/1/b.png").is_file()
    assert np.array_equal(np.stack(ytvos.layout.read(tmp_path, "v", "1", ["a", "b"])), masks)


def test_registration_conflicts_are_refused() -> None:
    clash = ExpressionFamily(datasets=("mevis",), protocol="other", layout=ExpressionLayout())
    with pytest.raises(RuntimeError, match="dataset 'mevis' already has an evaluation family"):
        register_family(clash)
    same_zip = ExpressionFamily(datasets=("x",), protocol="x", layout=ExpressionLayout(),
                                server_splits=("valid",), zip_name="ytvos")  # fmt: skip
    with pytest.raises(RuntimeError, match="submission format 'ytvos' already defined"):
        register_family(same_zip)
    assert "x" not in evaluated_datasets()
    unregister_family(clash)  # not registered: a no-op that leaves mevis alone
    assert family_for("mevis") is not clash


def test_registered_only_inside_the_context() -> None:
    assert toy.NAME not in dataset_names()
    with toy.registered():
        assert toy.NAME in dataset_names() and family_for(toy.NAME) is toy.FAMILY
        assert "toy" in protocol_names() and zip_format("toy").layout == toy.LAYOUT
        cfg = load_config(CONFIG, ["train.stages.0.datasets.0.dataset=toy-vos"])
        assert cfg.train.stages[0].datasets[0].dataset == toy.NAME
    assert toy.NAME not in dataset_names() and toy.NAME not in evaluated_datasets()
    with pytest.raises(UserError, match="unknown dataset 'toy-vos'"):
        family_for(toy.NAME)
    with pytest.raises(UserError, match="unknown submission layout 'toy'"):
        zip_format("toy")
    with pytest.raises(ConfigError, match="unknown dataset 'toy-vos'"):
        load_config(CONFIG, ["train.stages.0.datasets.0.dataset=toy-vos"])


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("toy")
    truth = toy.write_toy_dataset(root / "raw" / toy.NAME, root / "heldout" / toy.NAME)
    with toy.registered():
        yield root, truth


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg: RefSAMConfig = load_config(CONFIG, ["tracking.enabled=false"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # a bias towards foreground so that the untrained masks are not empty
        model.mask_decoder.output_hypernetworks_mlps[0].layers[-1].bias.add_(0.5)
    return save_model_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "model.pt")


def _rescored(pred: Path, truth: dict, split: str) -> protocols.ProtocolResult:
    """The expression protocol over the written PNGs and the generator's own GT."""
    items = []
    for (s, vid, exp_id), target in sorted(truth.items()):
        if s == split:
            masks = np.stack(toy.LAYOUT.read(pred, vid, exp_id, list(toy.FRAMES)))
            items.append((vid, exp_id, target, masks))
    return protocols.expressions("toy", items)


@pytest.mark.slow
def test_a_family_registered_from_outside_evaluates_end_to_end(
    toy_data, checkpoint: Path, tmp_path: Path
) -> None:
    root, truth = toy_data
    raw, heldout, shards = root / "raw" / toy.NAME, root / "heldout", root / "shards"
    assert DataSplit(dataset=toy.NAME, split="train").tag == "toy-vos/train"  # config knows it
    for split in toy.ToySource.splits:
        summary = ingest(toy.NAME, split, raw, shards, shard_size=1, progress=False)
        assert summary.videos == 2 and summary.quarantined == 0

    train = evaluate(checkpoint, toy.NAME, "train", shards=shards, out=tmp_path / "train",
                     heldout=heldout, device="cpu")  # fmt: skip
    pred = tmp_path / "train" / "predictions"
    assert sorted(p.relative_to(pred).as_posix() for p in pred.rglob("*.png"))[:2] == [
        "masks/train0/0/f0.png",
        "masks/train0/0/f1.png",
    ]
    expected = _rescored(pred, truth, "train")
    assert 0 < expected.summary["J"] < 1  # a real, non-trivial score
    for key in ("J", "F", "J&F"):
        assert train.metrics[key] == pytest.approx(expected.summary[key], abs=1e-12)
    assert train.metrics["protocol"] == "toy" and train.metrics["n_expressions"] == 6
    assert train.submission is None and train.frames == 6

    hidden = evaluate(checkpoint, toy.NAME, "hidden", shards=shards, out=tmp_path / "hidden",
                      heldout=heldout, device="cpu")  # fmt: skip
    pred = tmp_path / "hidden" / "predictions"
    expected = _rescored(pred, truth, "hidden")
    assert hidden.metrics["J&F"] == pytest.approx(expected.summary["J&F"], abs=1e-12)
    by_folder = score_dirs("toy", pred, heldout / toy.NAME / "hidden")
    assert by_folder.summary["J&F"] == pytest.approx(hidden.metrics["J&F"], abs=1e-12)
    assert hidden.submission is not None
    with zipfile.ZipFile(hidden.submission) as archive:
        assert all(n.startswith("masks/hidden") for n in archive.namelist())
        assert len(archive.namelist()) == 2 * 3 * len(toy.FRAMES)
    problems = check_submission(hidden.submission, raw / "hidden" / "expressions.json",
                                raw / "hidden" / "images", layout="toy")  # fmt: skip
    assert problems == []
    record = json.loads(hidden.metrics_json.read_text())
    assert record["dataset"] == toy.NAME and record["metrics"]["J&F"] == hidden.metrics["J&F"]
