"""The demo's held-out expression subsets (``heldout/<dataset>/<split>/subsets.json``): an
expression is ``motion`` exactly when its words without the motion phrase fit other objects
of its video too, and the files stay out of the published layout the model reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from refsam.data.demo import build_plan, generate_demo, writers
from refsam.data.demo.generate import VideoPlan
from refsam.data.demo.language import PLURAL
from refsam.data.demo.scenes import COLOURS, SHAPES, SIZES
from refsam.data.loader import iter_eval_videos
from refsam.data.shards import IngestSummary

WORDS = {
    **{c: ("colour", c) for c in COLOURS},
    **{s: ("size", s) for s in SIZES},
    **{s: ("shape", s) for s in SHAPES},
    **{PLURAL[s]: ("shape", s) for s in SHAPES},
}
MOTIONS = {"left": "left", "right": "right", "up": "up", "down": "down", "not": "still"}
EVAL_SPLITS = [("ref-youtube-vos", "valid"), ("ref-davis17", "valid"), ("mevis", "valid_u"),
               ("mevis", "valid")]  # fmt: skip


def _scored_videos() -> dict[tuple[str, str], list[VideoPlan]]:
    """The tiny plan's videos per held-out subsets file (ytvos valid holds the test videos)."""
    plan = build_plan(seed=0, scale="tiny")
    out = {("ref-youtube-vos", "train"): plan.ytvos["train"],
           ("ref-youtube-vos", "valid"): plan.ytvos["valid"] + plan.ytvos["test"]}  # fmt: skip
    out.update({("ref-davis17", s): v for s, v in plan.davis.items()})
    out.update({("mevis", s): v for s, v in plan.mevis.items()})
    return out


def _read_words(text: str) -> tuple[dict[str, str], str | None]:
    """(appearance words the sentence states, its motion or None), read from the text."""
    appearance: dict[str, str] = {}
    motion = None
    for word in text.replace("\u00b7", " ").split():
        word = word.strip(".,").lower()
        if word in WORDS:
            name, value = WORDS[word]
            appearance[name] = value
        elif word in MOTIONS and motion is None:
            motion = MOTIONS[word]
    return appearance, motion


def _fits(obj, attributes: dict[str, str]) -> bool:  # noqa: ANN001
    return all(obj.attributes()[k] == v for k, v in attributes.items())


def test_motion_expressions_need_their_motion_words(demo_root: Path) -> None:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for (dataset, split), videos in _scored_videos().items():
        labels = json.loads((demo_root / "heldout" / dataset / split / "subsets.json").read_text())
        assert set(labels) == {v.scene.name for v in videos}
        for video in videos:
            assert set(labels[video.scene.name]) == {e.exp_id for e in video.expressions}
            objects = video.scene.objects
            for e in video.expressions:
                appearance, motion = _read_words(e.text)
                look_alikes = {o.obj_id for o in objects if _fits(o, appearance)}
                label = labels[video.scene.name][e.exp_id]
                counts.setdefault((dataset, split), {}).setdefault(label, 0)
                counts[(dataset, split)][label] += 1
                if look_alikes == set(e.obj_ids):
                    assert label == "appearance", (video.scene.name, e.text)
                    continue
                assert label == "motion", (video.scene.name, e.text, look_alikes)
                assert motion is not None  # ... and the motion word picks the referents out
                assert {o.obj_id for o in objects if o.obj_id in look_alikes and o.motion == motion} == set(e.obj_ids)  # fmt: skip
    for key in EVAL_SPLITS:  # both kinds occur in every scored split of the tiny demo
        assert counts[key].get("appearance", 0) > 0 and counts[key].get("motion", 0) > 0, key


def test_subset_ids_are_the_ids_the_shards_carry(
    demo_root: Path, ingested: tuple[Path, dict[tuple[str, str], IngestSummary]]
) -> None:
    shards, _ = ingested
    for dataset, split in {key for key in _scored_videos()}:
        labels = json.loads((demo_root / "heldout" / dataset / split / "subsets.json").read_text())
        pairs = {(v.video, e.exp_id) for v in iter_eval_videos(shards / dataset / split) for e in v.expressions}  # fmt: skip
        labelled = {(video, exp_id) for video, exps in labels.items() for exp_id in exps}
        assert pairs and pairs <= labelled, (dataset, split)
        if dataset != "ref-youtube-vos" or split != "valid":  # valid: + the test videos
            assert pairs == labelled, (dataset, split)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_subsets_stay_out_of_the_published_layout(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo written without the subsets writer has the same raw/ bytes and the same
    held-out files but the subsets files."""
    monkeypatch.setattr(writers, "write_subsets", lambda *args, **kwargs: None)
    generate_demo(tmp_path, seed=0, scale="tiny")
    assert _hashes(tmp_path / "raw") == _hashes(demo_root / "raw")
    held = _hashes(demo_root / "heldout")
    subsets = {name for name in held if name.endswith("subsets.json")}
    assert len(subsets) == len(_scored_videos())
    assert _hashes(tmp_path / "heldout") == {k: v for k, v in held.items() if k not in subsets}
    assert not list((demo_root / "raw").rglob("subsets.json"))
