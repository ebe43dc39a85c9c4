"""Synthetic scenes for the demo datasets: coloured shapes that move, occlude and leave.

A :class:`Scene` is a pure description (frame size, frame count, objects with attributes and
linear motion, background parameters); :func:`render_frame` turns it into an RGB frame and a
label map of the *visible* object ids, so occlusion (later objects on top) and objects that
leave the frame come out of the geometry. :func:`make_scene` samples a scene whose objects
are distractors of each other (same shape / other colour and vice versa), so the language is
needed to pick the target. All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 30),
    "purple": (145, 55, 185),
}
SIZES = {"small": (0.14, 0.19), "big": (0.26, 0.34)}  # side as a share of the shorter frame side
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
APPEARANCE = ("size", "colour", "shape")
ATTRIBUTES = (*APPEARANCE, "motion")

_SUBPIXEL = 4  # cv2.fillPoly fixed-point bits
_MIN_FIRST_FRAME_VISIBLE = 0.6  # every object shows at least this share of itself in frame 0
_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class ShapeObject:
    """One object: attributes used by the language and its linear motion (pixels per frame)."""

    obj_id: int
    shape: str
    colour: str
    size: str
    motion: str
    side: float
    start: tuple[float, float]  # centre (x, y) in frame 0
    velocity: tuple[float, float]
    leaves: bool = False

    def attributes(self) -> dict[str, str]:
        """The language attributes ``{"size", "colour", "shape", "motion"}`` of the object."""
        return {
            "size": self.size,
            "colour": self.colour,
            "shape": self.shape,
            "motion": self.motion,
        }

    def centre(self, t: int) -> tuple[float, float]:
        """Centre (x, y) at frame index ``t``."""
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t


@dataclass(frozen=True)
class Scene:
    """A video (or a one-frame image): frame size, objects in drawing order, background."""

    name: str
    width: int
    height: int
    n_frames: int
    objects: tuple[ShapeObject, ...]
    background_seed: int
    background_colours: tuple[tuple[int, int, int], tuple[int, int, int]]


def shape_polygon(shape: str, centre: tuple[float, float], side: float) -> np.ndarray:
    """Vertices (N×2 float, x/y pixels) of ``shape`` of bounding size ``side`` at ``centre``."""
    cx, cy = centre
    r = side / 2.0
    if shape == "circle":
        angles = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * (r * 0.9)
    elif shape == "triangle":
        pts = np.array([[0.0, -1.0], [1.0, 0.85], [-1.0, 0.85]]) * r
    elif shape == "diamond":
        pts = np.array([[0.0, -1.0], [0.8, 0.0], [0.0, 1.0], [-0.8, 0.0]]) * r
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return pts + np.array([cx, cy])


def object_mask(obj: ShapeObject, t: int, height: int, width: int) -> np.ndarray:
    """Full (unoccluded) mask of ``obj`` at frame ``t``: H×W bool, clipped to the frame."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    pts = np.round(shape_polygon(obj.shape, obj.centre(t), obj.side) * (1 << _SUBPIXEL))
    cv2.fillPoly(canvas, [pts.astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL)
    return canvas.astype(bool)


def render_labels(scene: Scene, t: int) -> np.ndarray:
    """Label map H×W uint8 of visible object ids at frame ``t`` (0 = background)."""
    labels = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for obj in scene.objects:
        labels[object_mask(obj, t, scene.height, scene.width)] = obj.obj_id
    return labels


@functools.lru_cache(maxsize=4)
def _static_background(
    seed: int, height: int, width: int, colours: tuple[tuple[int, int, int], ...]
) -> np.ndarray:
    """Gradient between two muted colours plus a fixed texture: H×W×3 float32 (read-only)."""
    rng = np.random.default_rng([seed, 0])
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    c0, c1 = (np.array(c, dtype=np.float32) for c in colours)
    image = c0 + ramp[..., None] * (c1 - c0)
    image += rng.standard_normal((height, width, 1), dtype=np.float32) * 7.0
    image.flags.writeable = False
    return image


def _background(scene: Scene, t: int) -> np.ndarray:
    """The scene's static background plus a little per-frame noise: H×W×3 float32."""
    static = _static_background(
        scene.background_seed, scene.height, scene.width, scene.background_colours
    )
    frame_rng = np.random.default_rng([scene.background_seed, 1, t])
    return static + frame_rng.standard_normal(static.shape, dtype=np.float32) * 2.5


def render_frame(scene: Scene, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of ``scene``: (RGB H×W×3 uint8, visible-id label map H×W uint8)."""
    image = _background(scene, t)
    labels = render_labels(scene, t)
    for obj in scene.objects:
        visible = labels == obj.obj_id
        if not visible.any():
            continue
        shade = np.random.default_rng([scene.background_seed, 2, obj.obj_id]).uniform(-12, 12, 3)
        image[visible] = np.array(COLOURS[obj.colour], dtype=np.float32) + shade.astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def _sample_attributes(
    rng: np.random.Generator, n_objects: int, *, motion: bool, distinct_appearance: bool
) -> list[dict[str, str]]:
    """Attributes for ``n_objects`` objects, each new one a distractor of an earlier one.

    Objects differ on (size, colour, shape) when ``distinct_appearance``, else on
    (size, colour, shape, motion), so every object can be named uniquely.
    """
    directions = list(DIRECTIONS) if motion else ["still"]

    def fresh() -> dict[str, str]:
        return {
            "size": str(rng.choice(list(SIZES))),
            "colour": str(rng.choice(list(COLOURS))),
            "shape": str(rng.choice(SHAPES)),
            "motion": str(rng.choice(directions)),
        }

    def key(a: dict[str, str]) -> tuple[str, ...]:
        names = APPEARANCE if distinct_appearance else ATTRIBUTES
        return tuple(a[n] for n in names)

    chosen = [fresh()]
    while len(chosen) < n_objects:
        base = chosen[int(rng.integers(len(chosen)))]
        new = fresh()
        mode = rng.choice(
            ["same_shape", "same_colour", "same_look", "fresh"], p=[0.35, 0.35, 0.15, 0.15]
        )
        if mode == "same_shape":
            new["shape"] = base["shape"]
        elif mode == "same_colour":
            new["colour"] = base["colour"]
        elif mode == "same_look":
            new["shape"], new["colour"] = base["shape"], base["colour"]
        if key(new) not in {key(a) for a in chosen}:
            chosen.append(new)
    return chosen


def _place(
    rng: np.random.Generator,
    attrs: dict[str, str],
    obj_id: int,
    *,
    width: int,
    height: int,
    n_frames: int,
    leaves: bool,
) -> ShapeObject:
    """Pick side, start and velocity: the object stays in frame unless ``leaves``."""
    lo, hi = SIZES[attrs["size"]]
    side = float(rng.uniform(lo, hi) * min(width, height))
    dx, dy = DIRECTIONS[attrs["motion"]]
    span = max(n_frames - 1, 1)
    half = side / 2.0
    extent = width if dx else height
    forward = dx > 0 or dy > 0
    if leaves:  # fully outside (centre half a side past the edge) at 45-70 % of the video
        travel = float(rng.uniform(0.3, 0.45)) * extent + side
        speed = travel / max(1.0, rng.uniform(0.45, 0.7) * span)
        along = extent + half - travel if forward else travel - half
        along = float(np.clip(along, half, extent - half))
    elif dx or dy:  # stays inside for the whole video
        travel = float(rng.uniform(0.3, 0.55) * (extent - side))
        speed = travel / span
        along = float(rng.uniform(half, extent - half - travel))
        along = along if forward else extent - along
    else:
        speed, along = 0.0, 0.0
    if dx:
        start = (along, float(rng.uniform(half, height - half)))
    elif dy:
        start = (float(rng.uniform(half, width - half)), along)
    else:
        start = (float(rng.uniform(half, width - half)), float(rng.uniform(half, height - half)))
    return ShapeObject(
        obj_id=obj_id,
        shape=attrs["shape"],
        colour=attrs["colour"],
        size=attrs["size"],
        motion=attrs["motion"],
        side=side,
        start=start,
        velocity=(dx * speed, dy * speed),
        leaves=leaves,
    )


def _first_frame_ok(scene: Scene) -> bool:
    """Every object shows at least ``_MIN_FIRST_FRAME_VISIBLE`` of its full area in frame 0."""
    labels = render_labels(scene, 0)
    for obj in scene.objects:
        full = object_mask(obj, 0, scene.height, scene.width).sum()
        if full == 0 or (labels == obj.obj_id).sum() < _MIN_FIRST_FRAME_VISIBLE * full:
            return False
    return True


def make_scene(
    rng: np.random.Generator,
    *,
    name: str,
    width: int,
    height: int,
    n_frames: int,
    n_objects: int,
    motion: bool = True,
    distinct_appearance: bool = False,
    leaver: bool = False,
    occlude: bool = False,
) -> Scene:
    """Sample a scene of ``n_objects`` mutually distracting shapes (ids 1..n, drawn in order).

    ``leaver`` makes the first moving object (if any) leave the frame part-way; ``occlude`` parks a still
    object on another one's path so it is partly hidden in mid-video.
    """
    attrs = _sample_attributes(
        rng, n_objects, motion=motion, distinct_appearance=distinct_appearance
    )
    c0, c1 = (
        tuple(int(v) for v in np.clip(rng.integers(70, 170) + rng.integers(-22, 23, 3), 40, 210))
        for _ in range(2)
    )
    seed = int(rng.integers(2**31))
    leaver_index = (
        next((i for i, a in enumerate(attrs) if a["motion"] != "still"), None) if leaver else None
    )
    for _ in range(_PLACEMENT_TRIES):
        objects = [
            _place(
                rng,
                a,
                i + 1,
                width=width,
                height=height,
                n_frames=n_frames,
                leaves=i == leaver_index,
            )
            for i, a in enumerate(attrs)
        ]
        if occlude and len(objects) >= 2:
            objects = _park_occluder(rng, objects, n_frames)
        scene = Scene(name, width, height, n_frames, tuple(objects), seed, (c0, c1))
        if _first_frame_ok(scene):
            return scene
    raise RuntimeError(f"could not place {n_objects} objects in a {width}x{height} scene {name!r}")


def _park_occluder(
    rng: np.random.Generator, objects: list[ShapeObject], n_frames: int
) -> list[ShapeObject]:
    """Move the last still object (drawn on top) onto a moving object's mid-video position."""
    movers = [o for o in objects[:-1] if o.motion != "still" and not o.leaves]
    top = objects[-1]
    if not movers or top.motion != "still":
        return objects
    target = movers[int(rng.integers(len(movers)))]
    cx, cy = target.centre(n_frames // 2)
    jitter = target.side * 0.3
    parked = ShapeObject(
        top.obj_id, top.shape, top.colour, top.size, top.motion, top.side,
        (cx + float(rng.uniform(-jitter, jitter)), cy + float(rng.uniform(-jitter, jitter))),
        (0.0, 0.0),
    )  # fmt: skip
    return [*objects[:-1], parked]
