"""What a run was made from: flattened config params and provenance tags.

Tags set on every run: ``refsam.config_hash``, ``refsam.config_name``, ``git.commit``
(also as MLflow's own ``mlflow.source.git.commit`` so the UI shows it), ``git.branch``,
``versions.<package>`` for torch, segment_anything, transformers, mlflow and refsam, and
``data.<dataset>/<split>`` = the manifest hash of each shard directory used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

from refsam.config import RefSAMConfig

PACKAGES = {
    "torch": "torch",
    "segment_anything": "segment-anything",
    "transformers": "transformers",
    "mlflow": "mlflow",
    "refsam": "refsam",
}
TRUNCATED = "…[truncated]"
_BAD_KEY_CHARS = re.compile(r"[^\w./\- ]")


def metric_key(name: str) -> str:
    """A valid MLflow metric/param/tag key: ``&`` → ``_and_`` (``J&F`` → ``J_and_F``),
    ``+`` → ``_plus`` (``refcoco+`` → ``refcoco_plus``), other characters outside
    ``[A-Za-z0-9_./- ]`` → ``_``; at most 250 characters."""
    name = name.replace("&", "_and_").replace("+", "_plus")
    return _BAD_KEY_CHARS.sub("_", name)[:MAX_ENTITY_KEY_LENGTH]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        text = text[: MAX_PARAM_VAL_LENGTH - len(TRUNCATED)] + TRUNCATED
    return text


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"train.lr": "0.0001", "train.stages.0.steps": "10", ...}``.

    Lists of mappings are indexed (``stages.0.name``), other lists and scalars become JSON
    text; values longer than MLflow's 6000-character limit are truncated (the full config
    is always logged as the ``config.yaml`` artifact).
    """
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                flat.update(flatten_params(item, f"{name}.{index}."))
        else:
            flat[metric_key(name)] = _param_value(value if value is not None else "None")
    return flat


def config_params(cfg: RefSAMConfig) -> dict[str, str]:
    """The resolved config as flattened params (dotted keys)."""
    return flatten_params(cfg.model_dump(mode="json"))


def _read_ref(git_dir: Path, ref: str) -> str | None:
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = git_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split(" ", 1)[0]
    return None


def git_commit(root: Path) -> tuple[str, str]:
    """(commit sha, branch) of the repository at ``root``, read from ``.git`` files;
    ``("unknown", "")`` outside a repository."""
    for directory in (root, *root.parents):
        git_dir = directory / ".git"
        if git_dir.is_file():  # a worktree: "gitdir: <path>"
            git_dir = Path(git_dir.read_text().split(":", 1)[1].strip())
        head = git_dir / "HEAD"
        if head.is_file():
            text = head.read_text().strip()
            if not text.startswith("ref: "):
                return text, ""
            ref = text[5:]
            common = git_dir / "commondir"
            base = (git_dir / common.read_text().strip()) if common.is_file() else git_dir
            sha = _read_ref(git_dir, ref) or _read_ref(base, ref)
            return sha or "unknown", ref.removeprefix("refs/heads/")
    return "unknown", ""


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a model depends on (``"absent"`` if missing)."""
    versions = {}
    for name, dist in PACKAGES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def run_tags(
    cfg: RefSAMConfig, root: Path, data_manifests: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Provenance tags for a run of ``cfg`` (see module docstring)."""
    commit, branch = git_commit(root)
    tags = {
        "refsam.config_hash": cfg.config_hash(),
        "refsam.config_name": cfg.name,
        "refsam.variant": cfg.model.variant,
        "git.commit": commit,
        "git.branch": branch,
        "mlflow.source.git.commit": commit,
    }
    tags.update({f"versions.{k}": v for k, v in package_versions().items()})
    tags.update({metric_key(f"data.{k}"): v for k, v in (data_manifests or {}).items()})
    return tags
