"""Readers of the raw formats: every demo split ingests cleanly; bad whole files are fatal."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from refsam.data.index import read_index, read_manifest
from refsam.data.shards import ingest
from refsam.data.sources import catalog_card, dataset_names, open_source, raw_dir_name
from refsam.data.sources.refcoco import load_refs
from refsam.errors import DataError, UserError
from tests.data.conftest import all_splits


def test_registry_covers_every_dataset_with_a_card() -> None:
    shipped = ["ref-youtube-vos", "ref-davis17", "mevis", "refcoco", "refcoco+", "refcocog"]
    assert dataset_names() == sorted(shipped)
    for name in dataset_names():
        card = catalog_card(name)
        assert card["name"] == name, f"datasets/{name}.yaml missing or wrong"


def test_unknown_dataset_and_split_are_user_errors(demo_raw: Path) -> None:
    with pytest.raises(UserError, match="unknown dataset"):
        open_source("kinetics", "train", demo_raw)
    with pytest.raises(DataError, match="unknown split 'val'.*train, valid, test"):
        open_source("ref-youtube-vos", "val", demo_raw / "ref-youtube-vos")


@pytest.mark.parametrize(("dataset", "split"), all_splits())
def test_every_demo_split_ingests_without_quarantine(ingested, dataset: str, split: str) -> None:
    out, summaries = ingested
    summary = summaries[(dataset, split)]
    assert summary.quarantined == 0, summary.quarantine_by_reason
    assert summary.videos > 0 and summary.expressions > 0
    manifest = read_manifest(out / dataset / split)
    assert manifest["counts"]["videos"] == summary.videos
    assert len(read_index(out / dataset / split)) == summary.expressions


def test_ytvos_valid_is_valid_minus_test(demo_raw: Path, ingested) -> None:
    out, _ = ingested
    meta = demo_raw / "ref-youtube-vos" / "meta_expressions"
    valid = set(json.loads((meta / "valid" / "meta_expressions.json").read_text())["videos"])
    test = set(json.loads((meta / "test" / "meta_expressions.json").read_text())["videos"])
    assert test and test < valid
    assert (
        set(read_index(out / "ref-youtube-vos" / "valid").column("video").to_pylist())
        == valid - test
    )
    assert set(read_index(out / "ref-youtube-vos" / "test").column("video").to_pylist()) == test
    for split in ("valid", "test"):
        assert not read_manifest(out / "ref-youtube-vos" / split)["has_masks"]


def test_davis_text_sets_encodings_and_name_fixes(demo_raw: Path, ingested) -> None:
    out, _ = ingested
    rows = (
        read_index(out / "ref-davis17" / "valid").to_pylist()
        + read_index(out / "ref-davis17" / "train").to_pylist()
    )
    assert {r["annotation_set"] for r in rows} == {0, 1, 2, 3}
    text_dir = demo_raw / "ref-davis" / "davis_text_annotations"
    annot2 = (text_dir / "Davis17_annot2.txt").read_bytes().decode("latin-1")
    annot1 = (text_dir / "Davis17_annot1_full_video.txt").read_bytes().decode("utf-8")
    texts = {r["text"] for r in rows}
    for line in annot2.splitlines()[:3] + annot1.splitlines()[:3]:
        assert line.split('"')[1] in texts  # decoded with the right encoding
    assert "clasic-car" in (text_dir / "Davis17_annot1.txt").read_text()  # the demo misspells it …
    assert "classic-car" in {r["video"] for r in rows}  # … and the reader fixes it


def test_mevis_multi_object_expressions_and_no_masks_for_valid(ingested) -> None:
    out, _ = ingested
    rows = read_index(out / "mevis" / "train").to_pylist()
    assert any(len(r["obj_ids"]) > 1 for r in rows)
    assert not read_manifest(out / "mevis" / "valid")["has_masks"]


def test_heldout_ground_truth_never_reaches_shards(demo_root: Path, ingested) -> None:
    out, _ = ingested
    for split_dir in (out / "ref-youtube-vos" / "valid", out / "mevis" / "valid"):
        for tar in split_dir.glob("shard-*.tar"):
            data = tar.read_bytes()
            assert b'"key"' in data and b'"counts"' not in data  # no RLE at all
    assert (demo_root / "heldout" / "mevis" / "valid" / "mask_dict.json").is_file()


@pytest.fixture()
def raw_copy(demo_raw: Path, tmp_path: Path):
    def copy(dataset: str) -> Path:
        target = tmp_path / "raw" / raw_dir_name(dataset)
        if not target.exists():
            shutil.copytree(demo_raw / raw_dir_name(dataset), target)
        return target

    return copy


@pytest.mark.parametrize(
    ("dataset", "split", "meta"),
    [
        ("ref-youtube-vos", "train", "meta_expressions/train/meta_expressions.json"),
        ("ref-youtube-vos", "train", "train/meta.json"),
        ("mevis", "train", "train/meta_expressions.json"),
        ("mevis", "train", "train/mask_dict.json"),
        ("refcoco", "train", "refcoco/instances.json"),
    ],
)
def test_malformed_json_is_fatal_names_position_and_writes_nothing(
    raw_copy, tmp_path: Path, dataset, split, meta
) -> None:
    root = raw_copy(dataset)
    out = tmp_path / "out"
    first = ingest(dataset, split, root, out, progress=False)  # earlier output must stay intact
    before = {p: p.read_bytes() for p in (out / dataset / split).rglob("*") if p.is_file()}
    path = root / meta
    text = path.read_text()
    path.write_text(text[: len(text) // 2] + "\n,,}")
    with pytest.raises(DataError) as info:
        ingest(dataset, split, root, out, progress=False)
    message = str(info.value)
    assert (
        str(path) in message and "line" in message and "column" in message and "expected" in message
    )
    after = {p: p.read_bytes() for p in (out / dataset / split).rglob("*") if p.is_file()}
    assert after == before and first.videos > 0


def test_missing_root_or_layout_is_fatal(raw_copy, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="directory not found"):
        ingest("mevis", "train", tmp_path / "nowhere", tmp_path / "out", progress=False)
    root = raw_copy("ref-davis17")
    shutil.rmtree(root / "DAVIS" / "Annotations_unsupervised")
    with pytest.raises(DataError, match="Annotations_unsupervised"):
        ingest("ref-davis17", "valid", root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/refsam-pwned-by-pickle",))


class _Plain:
    pass


@pytest.mark.parametrize("payload", [_Exploit(), [{"ref_id": 1, "obj": _Plain()}], {1, 2}])
def test_refs_pickle_with_code_or_classes_is_refused(raw_copy, tmp_path: Path, payload) -> None:
    marker = Path("/tmp/refsam-pwned-by-pickle")
    marker.unlink(missing_ok=True)
    root = raw_copy("refcoco")
    refs = root / "refcoco" / "refs(unc).p"
    refs.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p.*(not a plain refs pickle|expected)"):
        ingest("refcoco", "train", root, tmp_path / "out", progress=False)
    assert not marker.exists(), "the pickle ran code"
    assert not (tmp_path / "out").exists()


def test_refs_pickle_with_a_nested_non_plain_value_names_where(tmp_path: Path) -> None:
    """Protocol 4 pickles a set and bytes without any global: the walk must find them deep
    inside a ref and name the place (shared containers are walked once)."""
    shared = {"tokens": ["a"], "raw": "A.", "sent_id": 1, "sent": "a"}
    for bad, kind in ((frozenset({1}), "frozenset"), (b"raw", "bytes")):
        refs = [
            {"ref_id": 0, "sentences": [shared, shared]},
            {"ref_id": 1, "sentences": [shared, {"sent": "b", "extra": [1, bad]}]},
        ]
        path = tmp_path / "refs(unc).p"
        path.write_bytes(pickle.dumps(refs, protocol=4))
        message = rf"refs\[1\]\['sentences'\]\[1\]\['extra'\]\[1\] is a {kind}"
        with pytest.raises(DataError, match=message):
            load_refs(path)


def test_load_refs_accepts_the_plain_demo_pickle(demo_raw: Path) -> None:
    refs = load_refs(demo_raw / "coco" / "refcoco" / "refs(unc).p")
    assert refs and {"ref_id", "ann_id", "image_id", "split", "sentences"} <= set(refs[0])
