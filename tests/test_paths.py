"""Run directories: one function names them; ``<run_name>-latest`` follows the newest run."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from refsam.config import RefSAMConfig
from refsam.paths import (
    base_run_name,
    latest_run_link,
    point_latest_run,
    run_dir,
    timestamped_run_name,
)
from refsam.train.rundir_lock import run_dir as lock_run_dir


def _cfg(output_dir: Path, run_name: str) -> RefSAMConfig:
    return RefSAMConfig.model_validate(
        {"train": {"output_dir": str(output_dir), "run_name": run_name}}
    )


def test_one_run_dir_function(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "demo-tiny-cpu")
    assert run_dir(cfg) == tmp_path / "demo-tiny-cpu"
    assert lock_run_dir is run_dir  # the lock and the runner use the same function


def test_pipeline_run_names_and_their_base() -> None:
    stamped = timestamped_run_name("demo-tiny-cpu", datetime(2026, 12, 5, 8, 1, 2, tzinfo=UTC))
    assert stamped == "demo-tiny-cpu-20261205-080102"
    assert base_run_name(stamped) == "demo-tiny-cpu"
    assert base_run_name("demo-tiny-cpu") == "demo-tiny-cpu"
    assert base_run_name("run-2026") == "run-2026"


def test_latest_link_follows_the_newest_run(tmp_path: Path) -> None:
    first = _cfg(tmp_path, "demo-20261205-080000")
    second = _cfg(tmp_path, "demo-20261205-090000")
    for cfg in (first, second):
        run_dir(cfg).mkdir()
    assert latest_run_link(first) == latest_run_link(second) == tmp_path / "demo-latest"
    assert point_latest_run(first) == tmp_path / "demo-latest"
    assert os.readlink(tmp_path / "demo-latest") == "demo-20261205-080000"  # relative
    assert point_latest_run(second) == tmp_path / "demo-latest"
    assert (tmp_path / "demo-latest").resolve() == run_dir(second).resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo-20261205-080000",
        "demo-20261205-090000",
        "demo-latest",
    ]  # no temporary left


def test_a_real_folder_in_the_way_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(tmp_path, "demo")
    run_dir(cfg).mkdir()
    (tmp_path / "demo-latest").mkdir()
    (tmp_path / "demo-latest" / "keep.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        assert point_latest_run(cfg) is None
    assert "could not point" in caplog.text
    assert (tmp_path / "demo-latest" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
