"""Referring expressions for the demo scenes, built from object attributes.

An expression names a set of attributes (e.g. ``{"colour": "red", "shape": "circle"}``);
its referent is *every* object of the scene that has all of them. Single-object expressions
pick attribute sets that match exactly one object (so they are unambiguous), multi-object
ones (MeViS style) pick sets that match several. The same vocabulary is used for every
dataset; only the sentence templates differ, like different annotators.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from refsam.data.demo.scenes import APPEARANCE, ATTRIBUTES, Scene, ShapeObject

PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
MOTION_PHRASE = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "still": "that is not moving",
}
MOTION_PHRASE_PLURAL = {**MOTION_PHRASE, "still": "that are not moving"}


@dataclass(frozen=True)
class SceneExpression:
    """One referring expression of a demo scene and the structured facts it was built from
    (the attributes it states); :class:`refsam.data.types.Expression` is the record an
    expression becomes once read back from a raw dataset."""

    exp_id: str
    text: str
    obj_ids: tuple[int, ...]
    attributes: tuple[tuple[str, str], ...]  # (name, value) pairs the text states
    annotation_set: int | None = None  # Ref-DAVIS17 only: 0..3 (see DATA.md)


def matching_objects(objects: Iterable[ShapeObject], attributes: dict[str, str]) -> tuple[int, ...]:
    """Ids of the objects that have every attribute in ``attributes``."""
    return tuple(
        o.obj_id for o in objects if all(o.attributes()[k] == v for k, v in attributes.items())
    )


APPEARANCE_SUBSET = "appearance"
MOTION_SUBSET = "motion"


def expression_subset(scene: Scene, expression: SceneExpression) -> str:
    """``"motion"`` when ``expression`` needs its motion phrase: without it, the attributes
    it states match objects of ``scene`` beyond its referents; else ``"appearance"``
    (its size / colour / shape words alone single its referents out)."""
    attributes = dict(expression.attributes)
    if attributes.pop("motion", None) is None:
        return APPEARANCE_SUBSET
    without_motion = set(matching_objects(scene.objects, attributes))
    return MOTION_SUBSET if without_motion != set(expression.obj_ids) else APPEARANCE_SUBSET


def noun_phrase(attributes: dict[str, str], *, plural: bool = False) -> str:
    """``"small red circle"`` / ``"red shapes"``: size, colour and shape (or a generic noun)."""
    words = [attributes[k] for k in ("size", "colour") if k in attributes]
    shape = attributes.get("shape")
    if plural:
        words.append(PLURAL[shape] if shape else "shapes")
    else:
        words.append(shape or "shape")
    return " ".join(words)


def _describe(
    attributes: dict[str, str], style: str, rng: np.random.Generator, plural: bool
) -> str:
    """Sentence for ``attributes`` in an annotator ``style`` (see :data:`STYLES`)."""
    np_text = noun_phrase(attributes, plural=plural)
    motion = attributes.get("motion")
    phrases = MOTION_PHRASE_PLURAL if plural else MOTION_PHRASE
    clause = phrases[motion] if motion else ""
    if style == "video":
        article = "the" if plural else str(rng.choice(["the", "a"]))
        return " ".join(w for w in (article, np_text, clause) if w)
    if style == "davis1":  # annotator 1: plain English; a typographic apostrophe (UTF-8 file)
        if motion == "still":
            clause = "that\u2019s not moving"
        return " ".join(w for w in ("the", np_text, clause) if w)
    if style == "davis2":  # annotator 2: terse notes with a middle dot (Latin-1 file)
        return f"{np_text} \u00b7 {clause or 'at the start'}"
    if style == "refcoco":
        return np_text if rng.random() < 0.5 else f"the {np_text}"
    if style == "refcocog":
        return (
            f"the {np_text} {rng.choice(['in the picture', 'on the background', 'in the image'])}"
        )
    raise ValueError(f"unknown expression style {style!r}")


STYLES = ("video", "davis1", "davis2", "refcoco", "refcocog")


def _unique_sets(scene: Scene, target: ShapeObject, names: Sequence[str]) -> list[tuple[str, ...]]:
    """Minimal attribute-name subsets (of ``names``) that single out ``target``."""
    for k in range(1, len(names) + 1):
        found = [
            combo
            for combo in itertools.combinations(names, k)
            if matching_objects(scene.objects, {n: target.attributes()[n] for n in combo})
            == (target.obj_id,)
        ]
        if found:
            return found
    return []


def single_expression(
    rng: np.random.Generator,
    scene: Scene,
    target: ShapeObject,
    *,
    exp_id: str,
    style: str,
    appearance_only: bool = False,
    need_motion: bool = False,
    annotation_set: int | None = None,
) -> SceneExpression:
    """An unambiguous expression for ``target``: a minimal unique set plus 0–2 extras.

    Raises:
        ValueError: when no attribute set singles out ``target``.
    """
    names = APPEARANCE if appearance_only else ATTRIBUTES
    options = _unique_sets(scene, target, names)
    if not options:
        raise ValueError(f"object {target.obj_id} of scene {scene.name!r} cannot be named uniquely")
    chosen = list(options[int(rng.integers(len(options)))])
    spare = [n for n in names if n not in chosen]
    extra = int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25]))
    chosen += [spare[int(i)] for i in rng.permutation(len(spare))[:extra]]
    if "shape" not in chosen and rng.random() < 0.5:
        chosen.append("shape")
    if need_motion and "motion" not in chosen:
        chosen.append("motion")
    attrs = {n: target.attributes()[n] for n in ATTRIBUTES if n in chosen}
    return SceneExpression(
        exp_id=exp_id,
        text=_describe(attrs, style, rng, plural=False),
        obj_ids=(target.obj_id,),
        attributes=tuple(attrs.items()),
        annotation_set=annotation_set,
    )


def group_expressions(scene: Scene) -> list[dict[str, str]]:
    """Attribute sets (1–2 attributes) shared by two or more objects, most specific first."""
    found: dict[tuple[int, ...], dict[str, str]] = {}
    for k in (2, 1):
        for combo in itertools.combinations(ATTRIBUTES, k):
            for obj in scene.objects:
                attrs = {n: obj.attributes()[n] for n in combo}
                ids = matching_objects(scene.objects, attrs)
                if len(ids) >= 2 and ids not in found:
                    found[ids] = attrs
    return list(found.values())


def multi_expression(
    rng: np.random.Generator, scene: Scene, attributes: dict[str, str], *, exp_id: str
) -> SceneExpression:
    """A plural expression whose referent is every object with ``attributes``."""
    ids = matching_objects(scene.objects, attributes)
    return SceneExpression(
        exp_id=exp_id,
        text=_describe(attributes, "video", rng, plural=True),
        obj_ids=ids,
        attributes=tuple((n, attributes[n]) for n in ATTRIBUTES if n in attributes),
    )
