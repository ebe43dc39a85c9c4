"""The CLI contract: --help, --version, exit 2 + one line on bad input, 1 on failure."""

import subprocess
import sys
from pathlib import Path

import pytest

from refsam import __version__
from refsam.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "demo-data" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refsam: error:")
    assert "\n" not in err
    assert "frobnicate" in err


def test_no_command_prints_help_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "refsam.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert __version__ in out.stdout


def test_bad_input_no_traceback_without_debug() -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "refsam.cli",
            "demo-data",
            "--out",
            "/dev/null/x",
            "--scale",
            "huge",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["evaluat"], "'evaluate'"),
        (["model", "inof", "tiny"], "'info'"),
        (["shards", "verfy", "x"], "'verify'"),
        (["train", "--config", "c.yaml", "--device", "cdua"], "'cuda'"),
    ],
)
def test_mistyped_subcommands_and_choices_get_a_did_you_mean(
    argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"(did you mean {suggestion}?)" in err and "\n" not in err


def test_a_far_off_subcommand_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["xyzzy"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_evaluate_lists_the_known_splits(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--checkpoint", "missing.pt", "--dataset", "ref-davis17", "--out", "o"]
    assert main([*args, "--split", "validation"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--split 'validation': ref-davis17 has the splits train, valid" in err
    assert "(did you mean 'valid'?)" in err
    assert main([*args[:4], "mevis", "--out", "o", "--split", "val"]) == 2
    assert "mevis has the splits train, valid_u, valid" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "m.pt", "--dataset", "ref-davis", "--split", "valid",
                 "--out", "o"]) == 2  # fmt: skip
    assert "(did you mean 'ref-davis17'?)" in capsys.readouterr().err


def test_evaluate_takes_a_checkpoint_or_a_registered_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["evaluate", "--dataset", "ref-davis17", "--split", "valid", "--out", str(tmp_path)]
    assert main(base) == 2
    assert "one of the arguments --checkpoint --model is required" in capsys.readouterr().err
    assert main([*base, "--checkpoint", "a.pt", "--model", "models:/refsam@champion"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    real = tmp_path / "outputs" / "demo-20261205-080000" / "checkpoints" / "best.pt"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"")
    missing = tmp_path / "outputs" / "demo" / "checkpoints" / "best.pt"
    assert main([*base, "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    # the one beside the missing path comes first (before any under the project's outputs/)
    assert f"{missing}: checkpoint not found; nearest existing: {real}" in err


def test_ingest_lists_the_known_splits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["ingest", "--dataset", "ref-davis17", "--split", "validation", "--raw", str(tmp_path),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2
    assert "unknown split 'validation'; expected one of train, valid" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
