"""Registry of raw-format readers: dataset name → :class:`~refsam.data.sources.base.Source`.

Every module in this package that defines a ``Source`` subclass decorated with
:func:`register` is found automatically: adding a dataset is one new file here plus one
catalog card ``datasets/<name>.yaml``; how its predictions are written and scored is its
evaluation family, registered beside it in :mod:`refsam.eval.families` (this package
cannot import eval). Code outside the package registers a reader with :func:`register`
and removes it with :func:`unregister`. Nothing outside the registries branches on names.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import yaml

from refsam.data.sources.base import Source
from refsam.errors import DataError, UserError
from refsam.storage import as_path

_REGISTRY: dict[str, type[Source]] = {}
CATALOG = Path(__file__).resolve().parents[3] / "datasets"


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: make a reader available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"dataset {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(cls: type[Source]) -> None:
    """Remove a reader registered with :func:`register` (e.g. a test's own dataset)."""
    if _REGISTRY.get(cls.name) is cls:
        del _REGISTRY[cls.name]


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def dataset_names() -> list[str]:
    """Every registered dataset name, in registration-independent (sorted) order."""
    _discover()
    return sorted(_REGISTRY)


def source_class(dataset: str) -> type[Source]:
    _discover()
    try:
        return _REGISTRY[dataset]
    except KeyError:
        raise UserError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def open_source(dataset: str, split: str, raw: Path) -> Source:
    """Open one split of a raw dataset (fatal DataError on a bad root or metadata file)."""
    return source_class(dataset)(as_path(raw), split)


def catalog_card(dataset: str) -> dict[str, Any]:
    """The dataset's catalog card ``datasets/<name>.yaml`` (empty dict when not shipped)."""
    path = CATALOG / f"{dataset}.yaml"
    if not path.is_file():
        return {}
    try:
        card = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: malformed YAML: {exc}") from exc
    return card if isinstance(card, dict) else {}


def raw_dir_name(dataset: str) -> str:
    """Folder of the dataset's raw root under a raw directory (e.g. ``coco`` for refcoco)."""
    return source_class(dataset).raw_dir


__all__ = [
    "Source",
    "catalog_card",
    "dataset_names",
    "open_source",
    "raw_dir_name",
    "register",
    "source_class",
    "unregister",
]
