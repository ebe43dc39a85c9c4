"""Registry of evaluation families: dataset name → :class:`~refsam.eval.families.base.EvalFamily`.

Every module of this package registers its family with :func:`register_family` when
imported; the lookups import them all first. Code outside the package (a plugin, a test)
registers its own with the same function and removes it with :func:`unregister_family`.
The evaluator, ``refsam score`` and the submission writer ask this registry; none of them
branches on dataset names.
"""

from __future__ import annotations

import importlib
import pkgutil

from refsam.errors import UserError
from refsam.eval.families.base import (
    EvalFamily,
    ExpressionFamily,
    FamilyRun,
    FolderOptions,
    FolderScorer,
)
from refsam.eval.prediction_layout import ZipFormat

_FAMILIES: dict[str, EvalFamily] = {}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def _registered() -> list[EvalFamily]:
    """Each registered family once, in the order of its first dataset name."""
    unique: dict[int, EvalFamily] = {}
    for name in sorted(_FAMILIES):
        unique.setdefault(id(_FAMILIES[name]), _FAMILIES[name])
    return list(unique.values())


def register_family(family: EvalFamily) -> EvalFamily:
    """Make ``family`` evaluate each of ``family.datasets``; returns it.

    A dataset, a ``refsam score`` protocol or a zip format name already served by another
    family is an error (RuntimeError: a programming mistake, not bad input)."""
    if not family.datasets:
        raise RuntimeError(f"{family!r}: an evaluation family needs at least one dataset")
    for name in family.datasets:
        current = _FAMILIES.get(name)
        if current is not None and current is not family:
            raise RuntimeError(f"dataset {name!r} already has an evaluation family")
    for other in _registered():
        if other is family:
            continue
        if family.folder_scorer and other.folder_scorer and family.protocol == other.protocol:
            raise RuntimeError(f"protocol {family.protocol!r} already scored by another family")
        mine, theirs = family.zip_format, other.zip_format
        if mine and theirs and mine.name == theirs.name:
            raise RuntimeError(f"submission format {mine.name!r} already defined")
    for name in family.datasets:
        _FAMILIES[name] = family
    return family


def unregister_family(family: EvalFamily) -> None:
    """Remove ``family`` (its datasets are no longer evaluated)."""
    for name in family.datasets:
        if _FAMILIES.get(name) is family:
            del _FAMILIES[name]


def evaluated_datasets() -> list[str]:
    """Every dataset name with an evaluation family, sorted."""
    _discover()
    return sorted(_FAMILIES)


def family_for(dataset: str) -> EvalFamily:
    """The family evaluating ``dataset`` (UserError naming the known datasets)."""
    _discover()
    try:
        return _FAMILIES[dataset]
    except KeyError:
        raise UserError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(_FAMILIES))}"
        ) from None


def folder_protocols() -> dict[str, FolderScorer]:
    """``refsam score`` protocol name → the folder scorer of the family that has it."""
    _discover()
    return {f.protocol: f.folder_scorer for f in _registered() if f.folder_scorer is not None}


def zip_formats() -> dict[str, ZipFormat]:
    """Submission zip format name → format, over every family with a server."""
    _discover()
    formats = (f.zip_format for f in _registered())
    return {fmt.name: fmt for fmt in formats if fmt is not None}


def zip_format(name: str) -> ZipFormat:
    """The submission zip format called ``name`` (UserError naming the known ones)."""
    formats = zip_formats()
    if name not in formats:
        raise UserError(
            f"unknown submission layout {name!r}; expected one of {', '.join(sorted(formats))}"
        )
    return formats[name]


__all__ = [
    "EvalFamily",
    "ExpressionFamily",
    "FamilyRun",
    "FolderOptions",
    "FolderScorer",
    "evaluated_datasets",
    "family_for",
    "folder_protocols",
    "register_family",
    "unregister_family",
    "zip_format",
    "zip_formats",
]
