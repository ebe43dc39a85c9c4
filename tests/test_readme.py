"""The README's example commands stay true: every ``refsam`` command in its ```bash blocks
names a real subcommand and real flags (fast), and the runnable ones run as written after
``make demo`` (slow), on the smoke config instead of the demo recipe.

The slow test builds a project in a tmp dir whose ``configs/demo-tiny-cpu.yaml`` is
``configs/smoke.yaml`` (run name ``demo-tiny-cpu``), runs the Makefile's ``demo`` recipe
(``--scale tiny`` demo data), then each README command in README order, each in a fresh
process. Optional ``[...]`` groups are left out unless :data:`PICKS` keeps one; placeholders
are filled from :data:`PLACEHOLDERS`. A command is skipped only for a reason in
:data:`SKIPS`, so a new README command runs here by default.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from refsam.cli import build_parser, main
from refsam.paths import DEMO_RAW
from refsam.services import create_bucket
from refsam.storage import as_path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
PLACEHOLDER = re.compile(r".*….*|[A-Z][A-Z0-9_]{2,}")  # a whole word: FRAMES_DIR, N, …
# README command (its first words) -> why it cannot run here
SKIPS = {
    "ingest --dataset ref-youtube-vos --split train --raw datasets/raw": "real dataset download",
    "ingest --dataset refcoco --split train --raw datasets/raw": "real dataset download",
    "ingest --dataset ref-davis17 --split valid --raw datasets/raw": "real dataset download",
    "train --config configs/refsam-vitb": "torchrun with 4 processes and a real recipe",
}
# optional groups kept when a command is run: subcommand -> flags (with the value to use)
PICKS = {
    "train": {"--resume": "auto", "--dry-run": None},
    "evaluate": {"--max-videos": "1"},
    "demo-data": {"--scale": "tiny"},
}
BUCKET = "team-data"  # the README's object-store examples' bucket
TIMINGS: list[str] = []  # wall time of each command run, for -s
PLACEHOLDERS = {
    "FRAMES_DIR_OR_VIDEO": "datasets/demo/raw/ref-davis/DAVIS/JPEGImages/480p/classic-car"
}


@dataclass
class Command:
    """One ``refsam`` command of the README: its words and its optional groups."""

    line: int
    words: list[str]
    optional: list[list[str]]

    @property
    def text(self) -> str:
        return shlex.join(self.words)


def _logical_lines(block: str) -> list[tuple[int, str]]:
    """(offset of the first line, the line with its ``\\`` continuations joined)."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(block.splitlines()):
        start, text = pending if pending is not None else (offset, "")
        text += " " + raw.rstrip()
        pending = (start, text[:-1]) if text.endswith("\\") else None
        if pending is None:
            lines.append((start, text))
    return lines


def readme_commands(text: str | None = None) -> list[Command]:
    """The ``refsam …`` commands (and ``-m refsam.cli …``) of the README's bash blocks."""
    text = README.read_text(encoding="utf-8") if text is None else text
    commands = []
    for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        first_line = text[: match.start()].count("\n") + 2
        for offset, line in _logical_lines(match.group(1)):
            optional = [shlex.split(g) for g in OPTIONAL.findall(line)]
            words = shlex.split(OPTIONAL.sub(" ", line), comments=True)
            for marker in ("refsam", "refsam.cli"):
                if marker in words:
                    start = words.index(marker) + 1
                    commands.append(Command(first_line + offset, words[start:], optional))
                    break
    return commands


def _subparser(
    parser: argparse.ArgumentParser, words: list[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser a command's leading words select, and the words naming it."""
    path: list[str] = []
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser, path = actions[0].choices[word], [*path, word]
    return parser, path


def check_command(command: Command) -> list[str]:
    """Problems of one README command against the real parser (unknown subcommand or flag,
    arguments that do not parse)."""
    parser, path = _subparser(build_parser(), command.words)
    if not path:
        return [f"README line {command.line}: unknown subcommand in `refsam {command.text}`"]
    known = {s for a in parser._actions for s in a.option_strings}
    flags = [w for w in command.words + sum(command.optional, []) if w.startswith("--")]
    problems = [
        f"README line {command.line}: `refsam {' '.join(path)}` has no option {flag}"
        for flag in flags
        if flag.split("=")[0] not in known
    ]
    words = ["x" if PLACEHOLDER.fullmatch(w) else w for w in command.words]
    try:
        build_parser().parse_args(words)
    except Exception as exc:  # the CLI's one-line usage error
        problems.append(
            f"README line {command.line}: `refsam {command.text}` does not parse: {exc}"
        )
    return problems


def test_readme_has_the_commands_a_newcomer_copies() -> None:
    texts = [c.text for c in readme_commands()]
    for needle in ("train --config configs/demo-tiny-cpu.yaml", "evaluate --model models:/refsam@champion",
                   "predict --model models:/refsam@champion", "predict --checkpoint outputs/demo-tiny-cpu-latest/",
                   "evaluate --checkpoint outputs/demo-tiny-cpu-latest/", "runs compare"):  # fmt: skip
        assert any(t.startswith(needle) for t in texts), needle


def test_every_readme_command_names_real_subcommands_and_flags() -> None:
    commands = readme_commands()
    assert len(commands) >= 12
    problems = [p for c in commands for p in check_command(c)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "refsam evaluate --chekpoint best.pt --dataset ref-davis17 --split valid --out o",
        "refsam evaluat --checkpoint best.pt --dataset ref-davis17 --split valid --out o",
        "refsam train --config c.yaml [--resum auto]",
        "refsam predict --video v --text t --out o   # neither --checkpoint nor --model",
    ],
)
def test_a_renamed_command_or_flag_is_caught(line: str) -> None:
    (command,) = readme_commands(f"```bash\n{line}\n```\n")
    assert check_command(command)


# ---------------------------------------------------------------- the commands, run


def _skip_reason(command: Command) -> str | None:
    return next((why for start, why in SKIPS.items() if command.text.startswith(start)), None)


def runnable(command: Command) -> list[str]:
    """The words to run: kept optional groups (PICKS) added, placeholders filled."""
    _, path = _subparser(build_parser(), command.words)
    words = list(command.words)
    picks = PICKS.get(path[0], {}) if path else {}
    for group in command.optional:
        if group and group[0] in picks:
            value = picks[group[0]]
            words += [group[0]] + ([value] if value is not None else [])
    filled = [PLACEHOLDERS.get(w, w) for w in words]
    left = [w for w in filled if PLACEHOLDER.fullmatch(w)]
    assert not left, f"README line {command.line}: fill {left} in PLACEHOLDERS or add a SKIPS entry"
    return filled


def make_demo_commands() -> list[list[str]]:
    """The ``refsam`` commands of the Makefile's ``demo-data`` and ``demo`` recipes, with
    tiny demo data."""
    text = MAKEFILE.read_text(encoding="utf-8")
    commands = []
    for target in ("demo-data", "demo"):
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, flags=re.M)
        assert recipe is not None, f"Makefile has no {target} target"
        for line in recipe.group(1).splitlines():
            if "/bin/refsam " in line:
                words = shlex.split(line.split("/bin/refsam ", 1)[1])
                commands.append(["tiny" if w == "small" else w for w in words])
    assert any(c[0] == "pipeline" for c in commands)
    return commands


def _project(tmp: Path) -> Path:
    (tmp / "configs").mkdir(parents=True)
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
    smoke["train"]["run_name"] = "demo-tiny-cpu"
    (tmp / "configs" / "demo-tiny-cpu.yaml").write_text(yaml.safe_dump(smoke), encoding="utf-8")
    return tmp


def _run(project: Path, words: list[str]) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env.update(
        REFSAM_HOME=str(project),
        PREFECT_HOME=str(project / ".prefect"),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    done = subprocess.run(
        [sys.executable, "-m", "refsam.cli", *words],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    TIMINGS.append(f"{time.perf_counter() - start:6.1f} s  refsam {shlex.join(words)}")
    return done


def _in_process(words: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    start = time.perf_counter()
    code = main(words)
    err = capsys.readouterr().err
    TIMINGS.append(f"{time.perf_counter() - start:6.1f} s  refsam {shlex.join(words)}")
    return code, err


@pytest.mark.slow
def test_readme_commands_run_after_make_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], s3
) -> None:
    project = _project(tmp_path)
    for words in make_demo_commands():  # in a process of their own, as make runs them
        done = _run(project, words)
        assert done.returncode == 0, f"make demo: refsam {shlex.join(words)}\n{done.stderr[-3000:]}"
    latest = project / "outputs" / "demo-tiny-cpu-latest"
    assert latest.is_symlink() and (latest / "checkpoints" / "best.pt").is_file()
    # the README's bucket (s3://team-data) on the tests' S3 server, holding the demo raw data
    create_bucket(s3.endpoint, BUCKET)
    as_path(f"s3://{BUCKET}").fs.put(str(project / DEMO_RAW), f"{BUCKET}/raw", recursive=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("REFSAM_HOME", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran = []
    for command in readme_commands():
        if _skip_reason(command) is not None:
            continue
        words = runnable(command)
        code, err = _in_process(words, capsys)
        assert code == 0, (
            f"README line {command.line}: refsam {shlex.join(words)} -> exit {code}\n{err}"
        )
        ran.append(words[0])
    assert {"train", "evaluate", "predict", "ingest", "shards", "model", "runs"} <= set(ran)
    assert (project / "outputs" / "predict" / "classic-car" / "contact_sheet.png").is_file()
    assert (project / "outputs" / "eval" / "davis" / "metrics.json").is_file()
    # `refsam train` wrote outputs/demo-tiny-cpu; the link now points at it
    assert latest.resolve() == (project / "outputs" / "demo-tiny-cpu").resolve()
    print("\n".join(TIMINGS))  # shown with -s
