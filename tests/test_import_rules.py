"""Imports run one way (issue 19): ``modeling`` and ``data`` at the bottom, then ``eval``,
``train``, ``tracking``, ``flows``, ``commands``; each layer imports only what stands before
it (or itself). The top-level helper modules (``refsam/config.py``, ``errors.py``,
``paths.py``, ``runlog.py``, …) are the base every layer may use; they import no layer.

Every ``import`` statement counts: module level, inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# rank of each layer: a module may import a module of the same or a lower rank. ``data`` sits
# beside ``modeling`` at the bottom, above it only because it uses the model's frame
# preprocessing (ARCHITECTURE.md, "Shared contracts"); modeling never imports data.
RANKS = {
    "base": 0,
    "modeling": 1,
    "data": 2,
    "eval": 3,
    "train": 4,
    "tracking": 5,
    "flows": 6,
    "commands": 7,
    "cli": 8,
}
OURS = ("refsam", "flows")
# The one import that points up, by design: a config names datasets, and validating a name
# asks the reader registry (refsam.data.sources), which is the only list of datasets. The
# import is function-local (refsam.data imports refsam.config at load).
ALLOWED = {("refsam.config", "refsam.data.sources")}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    """``refsam.eval.io`` → ``eval``; ``flows.train`` → ``flows``; ``refsam.config`` → base."""
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    if len(parts) == 1:
        return "base"
    name = parts[1]
    if name == "cli":
        return "cli"
    return name if name in RANKS else "base"


def imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """Every refsam/flows module ``path`` imports (absolute name, line), at any depth."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            if node.module is None or node.level:  # `from . import x` may name submodules
                names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(n, node.lineno) for n in names if n.split(".")[0] in OURS]
    return found


def violations(root: Path) -> list[str]:
    """One line per import that points up (or sideways across layers)."""
    problems = []
    files = sorted((root / "refsam").rglob("*.py")) + sorted((root / "flows").rglob("*.py"))
    for path in files:
        source = layer(module_name(path, root))
        for target, line in imports(path, root):
            if (module_name(path, root), target) in ALLOWED:
                continue
            if RANKS[layer(target)] > RANKS[source]:
                where = f"{path.relative_to(root)}:{line}"
                problems.append(f"{where}: {source} imports {target} ({layer(target)})")
    return problems


def test_imports_run_one_way() -> None:
    assert violations(ROOT) == []


def test_named_rules_of_the_issue() -> None:
    """The rules issue 19 spells out, checked by name as well as by rank."""
    bad = []
    for path in sorted((ROOT / "refsam").rglob("*.py")) + sorted((ROOT / "flows").rglob("*.py")):
        source = layer(module_name(path, ROOT))
        for target, line in imports(path, ROOT):
            target_layer = layer(target)
            rules = [
                source == "modeling"
                and target_layer in {"data", "train", "eval", "tracking", "flows"},
                source == "eval" and target_layer in {"train", "tracking"},
                source not in {"commands", "cli"}
                and path.is_relative_to(ROOT / "refsam")
                and target_layer in {"commands", "flows"},
            ]
            if any(rules):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == []


def test_the_checker_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    """A wrong import hidden in a function (or written relatively) is reported."""
    for package in ("refsam", "refsam/modeling", "refsam/eval", "refsam/train", "flows"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "refsam/config.py").write_text("import torch\n")
    (tmp_path / "refsam/modeling/net.py").write_text(
        "from refsam.config import X\n\ndef load():\n    from refsam.train import state\n"
    )
    (tmp_path / "refsam/eval/run.py").write_text("from ..train import state\nfrom . import io\n")
    (tmp_path / "refsam/train/loop.py").write_text("from refsam.eval.run import go\n")
    (tmp_path / "flows/x.py").write_text("import refsam.train.loop\n")
    found = violations(tmp_path)
    assert found == [
        "refsam/eval/run.py:1: eval imports refsam.train (train)",
        "refsam/eval/run.py:1: eval imports refsam.train.state (train)",
        "refsam/modeling/net.py:4: modeling imports refsam.train (train)",
    ]


def test_the_real_tree_has_the_imports_the_checker_must_see() -> None:
    """Guards the parser itself: imports known to exist in the tree are found."""
    local = imports(ROOT / "refsam/modeling/checkpoint.py", ROOT)
    assert any(name == "refsam.modeling.build" for name, _ in local)  # inside a function
    assert any(name == "refsam.config" for name, _ in local)  # module level
    assert len(list((ROOT / "refsam").rglob("*.py"))) > 50
