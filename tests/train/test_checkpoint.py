"""Checkpoint files: atomic writes, keep-last-N + best, weights-only loading, RNG round trip."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from refsam.modeling.checkpoint import FORMAT, CheckpointError, load_checkpoint
from refsam.train.checkpoint import (
    CheckpointManager,
    atomic_save,
    capture_rng_state,
    latest_checkpoint,
    resolve_resume,
    restore_rng_state,
)


def _payload(step: int) -> dict:
    return {"format": FORMAT, "step": step, "model": {"w": torch.full((2,), float(step))}}


def test_keep_last_and_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (1, 2, 3, 4):
        manager.save(_payload(step), step)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["step-00000003.pt", "step-00000004.pt"]
    assert manager.best_path is None
    manager.save_best(_payload(3))
    assert load_checkpoint(manager.best_path)["step"] == 3
    assert latest_checkpoint(tmp_path / "ckpt").name == "step-00000004.pt"
    assert not [p for p in (tmp_path / "ckpt").iterdir() if ".tmp" in p.name]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = atomic_save(_payload(1), tmp_path / "step-00000001.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"format": FORMAT, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1  # untouched
    assert os.listdir(tmp_path) == ["step-00000001.pt"]  # no temporary left behind


def test_load_is_weights_only_and_checks_the_format(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "obj": pickle.loads(pickle.dumps(Path("x")))}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(evil)  # a Path object is not allowed by weights_only
    sam_like = tmp_path / "sam.pth"
    torch.save({"image_encoder.w": torch.zeros(1)}, sam_like)
    with pytest.raises(CheckpointError, match="not a refsam training checkpoint"):
        load_checkpoint(sam_like)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(garbage)


def _draw_all() -> tuple:
    """One draw from every generator a checkpoint's RNG state covers."""
    return (
        torch.rand(3),
        np.random.rand(3),
        np.random.normal(),
        random.random(),
        random.gauss(0, 1),
    )


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    path = atomic_save({"format": FORMAT, "rng": state}, tmp_path / "rng.pt")
    expected = _draw_all()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(path)["rng"])
    got = _draw_all()
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_resolve_resume(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "checkpoints"
    assert resolve_resume(None, directory) is None
    assert resolve_resume("auto", directory) is None  # nothing yet: start fresh
    manager = CheckpointManager(directory, keep_last=3)
    manager.save(_payload(5), 5)
    manager.save(_payload(12), 12)
    assert resolve_resume("auto", directory).name == "step-00000012.pt"
    explicit = directory / "step-00000005.pt"
    assert resolve_resume(str(explicit), directory) == explicit
    with pytest.raises(CheckpointError, match="not found"):
        resolve_resume(tmp_path / "nope.pt", directory)


def test_a_missing_checkpoint_names_the_nearest_existing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFSAM_HOME", str(tmp_path / "elsewhere"))
    outputs = tmp_path / "outputs"
    made = []
    for age, name in enumerate(["demo-20261205-080000", "demo-20261204-080000", "other"]):
        folder = outputs / name / "checkpoints"
        folder.mkdir(parents=True)
        for file in ("step-00000004.pt", "best.pt"):
            (folder / file).write_bytes(b"")
            os.utime(folder / file, (1e9 - age * 100, 1e9 - age * 100))
        made.append(folder / "best.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(outputs / "demo" / "checkpoints" / "best.pt")
    message = str(info.value)
    assert "checkpoint not found; nearest existing: " in message
    listed = message.split("nearest existing: ")[1].split(", ")
    assert listed == [str(p) for p in made]  # same file name first, newest first, three
    with pytest.raises(CheckpointError, match="--resume .*nearest existing"):
        resolve_resume(outputs / "demo" / "checkpoints" / "step-00000009.pt", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        CheckpointError, match=r"not found \(no \*\.pt file near it nor under outputs/\)"
    ):
        load_checkpoint(empty / "best.pt")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello", "(KeyError 101: the pickle reads memo entry 101, never stored"),
        (b"every garbage", "(IndexError: pop from empty list)"),
    ],
)
def test_an_unreadable_checkpoint_keeps_the_underlying_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert f"bad.pt: not a readable checkpoint, truncated or corrupt {reason}" in str(info.value)
