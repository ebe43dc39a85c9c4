"""Bad paths, names, numbers and types on the command line of ingest, shards, score and
demo-data: exit code 2 and exactly one line saying what to fix (no traceback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refsam.cli import main
from refsam.data.lock import LOCK_NAME


@pytest.fixture(scope="module")
def paths(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    (base / "afile").write_text("x")
    (base / "empty").mkdir()
    bad = base / "bad-shards" / "mevis" / "train"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text('{"format": ')
    wrong = base / "wrong-shards"
    wrong.mkdir()
    (wrong / "manifest.json").write_text(json.dumps({"format": "something/9"}))
    for side in ("gt", "pred"):
        (base / side).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(base / side / "1.png")
    return {
        "base": base,
        "raw": demo_root / "raw",
        "mevis": demo_root / "raw" / "mevis",
        "file": base / "afile",
        "empty": base / "empty",
        "bad": base / "bad-shards",
        "wrong": base / "wrong-shards",
        "gt": base / "gt",
        "pred": base / "pred",
    }


CASES = {
    # ingest
    "ingest-unknown-dataset": (
        "ingest --dataset nope --raw {mevis} --out {base}/o",
        "unknown dataset 'nope'",
    ),
    "ingest-unknown-split": (
        "ingest --dataset mevis --split bogus --raw {mevis} --out {base}/o",
        "unknown split 'bogus'",
    ),
    "ingest-missing-raw": (
        "ingest --dataset mevis --raw {base}/missing --out {base}/o",
        "directory not found",
    ),
    "ingest-raw-is-a-file": ("ingest --dataset mevis --raw {file} --out {base}/o", "not found"),
    "ingest-wrong-layout": ("ingest --dataset mevis --raw {empty} --out {base}/o", "train"),
    "ingest-out-is-a-file": (
        "ingest --dataset mevis --raw {mevis} --out {file}",
        "cannot create the output folder",
    ),
    "ingest-negative-workers": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --workers -2",
        "argument --workers: expected a positive integer, got '-2'",
    ),
    "ingest-zero-workers": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --workers 0",
        "--workers",
    ),
    "ingest-negative-shard-size": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --shard-size -1",
        "argument --shard-size",
    ),
    "ingest-float-shard-size": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --shard-size 1.5",
        "argument --shard-size",
    ),
    "ingest-text-workers": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --workers many",
        "'many'",
    ),
    "ingest-no-dataset": ("ingest --raw {mevis} --out {base}/o", "--dataset"),
    "ingest-all-and-dataset": (
        "ingest --all --dataset mevis --raw {raw} --out {base}/o",
        "drop --dataset",
    ),
    "ingest-all-nothing-found": (
        "ingest --all --raw {empty} --out {base}/o",
        "no dataset roots found",
    ),
    "ingest-missing-out": ("ingest --dataset mevis --raw {mevis}", "--out"),
    "ingest-unknown-option": (
        "ingest --dataset mevis --raw {mevis} --out {base}/o --turbo",
        "unrecognized arguments",
    ),
    # shards
    "shards-no-action": ("shards", "give an action"),
    "shards-unknown-action": ("shards repair {base}", "invalid choice"),
    "shards-verify-missing": ("shards verify {base}/missing", "no manifest.json"),
    "shards-show-a-file": ("shards show {file}", "no manifest.json"),
    "shards-malformed-manifest": ("shards verify {bad}", "malformed JSON at line 1"),
    "shards-wrong-format": ("shards show {wrong}", "expected a manifest with format"),
    # score
    "score-missing-pred": (
        "score --pred {base}/missing --gt {gt} --protocol refcoco",
        "prediction folder not found",
    ),
    "score-missing-gt": (
        "score --pred {pred} --gt {base}/missing --protocol davis",
        "ground-truth folder not found",
    ),
    "score-unknown-protocol": (
        "score --pred {pred} --gt {gt} --protocol kitti",
        "invalid choice: 'kitti'",
    ),
    "score-bad-void": (
        "score --pred {pred} --gt {gt} --protocol davis --void maybe",
        "argument --void",
    ),
    "score-empty-sequences": (
        "score --pred {pred} --gt {gt} --protocol davis --sequences ,,",
        "no sequence names",
    ),
    "score-out-is-a-file": (
        "score --pred {pred} --gt {gt} --protocol refcoco --out {file}",
        "cannot create the output folder",
    ),
    "score-missing-meta": (
        "score --pred {pred} --gt {gt} --protocol ytvos --meta {base}/missing.json",
        "file not found",
    ),
    "score-no-protocol": ("score --pred {pred} --gt {gt}", "--protocol"),
    # demo-data
    "demo-out-is-a-file": ("demo-data --out {file}", "not a directory"),
    "demo-negative-seed": ("demo-data --out {base}/d --seed -1", "--seed"),
    "demo-text-seed": ("demo-data --out {base}/d --seed one", "--seed"),
    "demo-unknown-scale": ("demo-data --out {base}/d --scale huge", "unknown demo scale"),
    "demo-missing-out": ("demo-data", "--out"),
    "demo-zero-workers": ("demo-data --out {base}/d --workers 0", "--workers"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(
    paths: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    template, expected = CASES[case]
    argv = template.format(**{k: str(v) for k, v in paths.items()}).split()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("refsam: error: "), captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err


def test_locked_output_root_exits_2_naming_the_owner(
    paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = paths["base"] / "locked"
    target = out / "mevis" / "train"
    target.mkdir(parents=True)
    try:
        owner = {"pid": sleeper.pid, "host": socket.gethostname()}
        (target / LOCK_NAME).write_text(json.dumps(owner))
        code = main(
            ["ingest", "--dataset", "mevis", "--raw", str(paths["mevis"]), "--out", str(out)]
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"locked by process {sleeper.pid}" in err[0]


def test_console_script_prints_no_traceback(paths: dict[str, Path]) -> None:
    """The real entry point (a separate process): exit 2, one line on stderr."""
    cmd = [sys.executable, "-m", "refsam.cli", "ingest", "--dataset", "mevis"]
    done = subprocess.run(
        [*cmd, "--raw", str(paths["mevis"]), "--out", str(paths["base"] / "o"), "--workers", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "refsam: error: refsam ingest: argument --workers: expected a positive integer, "
        "got '-3' (see --help)"
    ]
