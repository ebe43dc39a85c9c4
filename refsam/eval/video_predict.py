"""Segment one video for one or more text expressions and write what a person looks at.

:func:`predict_video` is what ``refsam predict`` runs, callable from Python::

    from refsam.eval.video_predict import predict_video
    result = predict_video("best.pt", "clip.mp4", ["the red car"], "out/", device="cpu")
    result.overlay, result.frames  # Path("out/overlay.webm"), 120

It writes to ``out``: ``masks/exp-<k>/<frame>.png`` (0/255, the frame's size, one folder
per expression), ``expressions.json`` (``exp-<k>`` → text), ``overlay.webm`` (VP9, at the
source video's frame rate unless ``fps`` is given) and ``contact_sheet.png`` (evenly spaced
frames, each labelled with its frame name, every mask overlaid, and a colour legend).

An output folder that already holds files is refused unless ``overwrite=True``, which first
removes what a previous prediction wrote there — and only that: a folder holding anything
else, or the current, home or root folder, is never cleared (:func:`check_output_folder`).

The module imports no torch at load time: the checks (:func:`clean_texts`,
:func:`~refsam.eval.frames.probe_video`, :func:`check_output_folder`, :func:`frame_rate`)
run before the model loads, so the CLI reports a bad argument at once.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refsam.errors import UserError
from refsam.eval.frames import VideoInfo, iter_frames, probe_video

if TYPE_CHECKING:
    import torch

    from refsam.modeling.refsam import RefSAM

FOLDER_FPS = 6.0
"""Overlay frame rate for a frame folder (it has none): Ref-YouTube-VOS's annotated frames
are every 5th of 30 fps; pass ``fps`` for other folders."""
SHEET_FRAMES = 8
"""Frames on the contact sheet (evenly spaced, first and last included)."""
OUTPUT_FILES = ("expressions.json", "overlay.webm", "contact_sheet.png")
MASKS = "masks"
_MASK_FOLDER = re.compile(r"exp-\d{2,}")


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_video` wrote (paths) and did (counts, settings used)."""

    out: Path
    frames: int
    expressions: tuple[str, ...]
    masks: Path  # masks/exp-<k>/<frame>.png, one PNG per frame and expression
    expressions_json: Path
    overlay: Path
    contact_sheet: Path
    sheet_frames: tuple[str, ...]  # the frame names on the contact sheet's tiles, in order
    fps: float
    threshold: float
    device: str


def clean_texts(texts: Sequence[str]) -> tuple[str, ...]:
    """The expressions stripped of surrounding blanks; UserError for none or an empty one."""
    cleaned = (texts.strip(),) if isinstance(texts, str) else tuple(t.strip() for t in texts)
    if not cleaned:
        raise UserError("no expression given (--text)")
    for number, text in enumerate(cleaned, start=1):
        if not text:
            raise UserError(f"--text #{number}: empty expression")
    return cleaned


def frame_rate(fps: float | None, info: VideoInfo) -> float:
    """``fps`` if given, else the video file's own rate, else :data:`FOLDER_FPS`."""
    if fps is not None:
        if not fps > 0:
            raise UserError(f"--fps {fps}: expected a positive frame rate")
        return float(fps)
    return info.fps if info.fps is not None else FOLDER_FPS


def _refusal(out: Path) -> str | None:
    """Why ``out`` must never be cleared, or None."""
    where = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if where == Path(where.anchor):
        return "it is a filesystem root"
    if where == home:
        return "it is the home folder"
    if where == cwd or where in cwd.parents:
        return "it is the current folder or contains it"
    return None


def _foreign_entries(out: Path) -> list[str]:
    """Paths under ``out`` (relative) that a prediction does not write."""

    def plain_file(path: Path, suffix: str | None = None) -> bool:
        return path.is_file() and not path.is_symlink() and suffix in (None, path.suffix)

    foreign: list[str] = []
    for entry in out.iterdir():
        if entry.name in OUTPUT_FILES and plain_file(entry):
            continue
        if entry.name != MASKS or entry.is_symlink() or not entry.is_dir():
            foreign.append(entry.name)
            continue
        for folder in entry.iterdir():
            if (
                not _MASK_FOLDER.fullmatch(folder.name)
                or folder.is_symlink()
                or not folder.is_dir()
            ):
                foreign.append(f"{MASKS}/{folder.name}")
                continue
            foreign += [
                f"{MASKS}/{folder.name}/{p.name}"
                for p in folder.iterdir()
                if not plain_file(p, ".png")
            ]
    return sorted(foreign)


def check_output_folder(out: str | Path, *, overwrite: bool = False) -> None:
    """Refuse an output folder a prediction must not write into (changes nothing).

    Fine: a missing or empty folder. Refused (UserError): a file; a folder with files in it
    unless ``overwrite``; with ``overwrite``, the root, home or current folder (or one of its
    parents), or a folder holding anything a prediction does not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected an output folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(
            f"--out {out}: folder is not empty; choose a new folder, or pass --overwrite to "
            "replace the prediction in it"
        )
    reason = _refusal(out)
    if reason is not None:
        raise UserError(f"--out {out}: refusing to clear it for --overwrite, {reason}")
    foreign = _foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else ""
        )
        raise UserError(
            f"--out {out}: refusing to clear it for --overwrite, it holds files refsam predict "
            f"does not write: {shown}"
        )


def _clear_output_folder(out: Path) -> None:
    """Remove a previous prediction's files (after :func:`check_output_folder` allowed it)."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / MASKS).is_dir():
        shutil.rmtree(out / MASKS)


def sheet_indices(count: int, frames: int = SHEET_FRAMES) -> set[int]:
    """Up to ``frames`` evenly spaced frame indices of ``count``, first and last included."""
    if count <= 1:
        return {0}
    shown = min(frames, count)
    return {round(i * (count - 1) / (shown - 1)) for i in range(shown)}


def _remember(frames: Iterable[np.ndarray], held: deque[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield frames, keeping each in ``held`` until its prediction is consumed."""
    for frame in frames:
        held.append(frame)
        yield frame


def predict_video(
    model: RefSAM | str | Path,
    video: str | Path,
    texts: Sequence[str],
    out: str | Path,
    *,
    device: str | torch.device = "auto",
    fps: float | None = None,
    threshold: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictResult:
    """Segment ``video`` (a frame folder or video file) for each of ``texts`` into ``out``.

    Args:
        model: a RefSAM model, or a training checkpoint path (``refsam.tracking``'s
            ``resolve_model_uri`` turns a ``models:/…`` URI into one).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a missing GPU is a UserError.
        fps: the overlay's frame rate (default: the video file's, or :data:`FOLDER_FPS`).
        threshold: mask probability threshold (default: the checkpoint config's
            ``eval.mask_threshold``; for a model object, the config default).
        overwrite: replace a previous prediction in ``out`` (see the module doc).
        progress: show a per-frame progress bar on stderr.
    """
    from tqdm import tqdm

    from refsam.config import EvalConfig
    from refsam.eval.io import write_binary_png
    from refsam.eval.predictor import OnlinePredictor
    from refsam.eval.visualize import contact_sheet, legend, overlay_masks, write_png, write_webm
    from refsam.modeling.device import resolve_device

    texts = clean_texts(texts)
    info = probe_video(video)
    out = Path(out)
    check_output_folder(out, overwrite=overwrite)
    rate = frame_rate(fps, info)
    if threshold is not None and not 0 < threshold < 1:
        raise UserError(f"--threshold {threshold}: expected a value in (0, 1)")
    target = resolve_device(device)
    default_threshold = EvalConfig().mask_threshold
    if isinstance(model, str | Path):
        from refsam.modeling.checkpoint import model_from_checkpoint

        model, cfg = model_from_checkpoint(Path(model), device="cpu")
        default_threshold = cfg.eval.mask_threshold
    threshold = default_threshold if threshold is None else threshold
    was_training = model.training
    predictor = OnlinePredictor(model, device=target, threshold=threshold)  # checks threshold

    _clear_output_folder(out)  # the work starts: only now is anything removed or created
    out.mkdir(parents=True, exist_ok=True)
    expressions_json = out / "expressions.json"
    expressions_json.write_text(
        json.dumps({f"exp-{k:02d}": t for k, t in enumerate(texts)}, indent=2) + "\n"
    )
    picks = sheet_indices(info.count)
    tiles: list[np.ndarray] = []
    tile_names: list[str] = []
    frames = 0

    def overlays() -> Iterator[np.ndarray]:
        nonlocal frames
        held: deque[np.ndarray] = deque()
        predictions = predictor.track(_remember(iter_frames(info.path), held), list(texts))
        bar = tqdm(
            predictions, total=info.count, desc=f"predict {info.path.name}", unit="frame",
            disable=not progress,
        )  # fmt: skip
        for prediction in bar:
            frame = held.popleft()
            name = info.frame_name(prediction.index)
            for k, mask in enumerate(prediction.masks):
                write_binary_png(out / MASKS / f"exp-{k:02d}" / f"{name}.png", mask)
            shown = overlay_masks(frame, list(prediction.masks))
            if prediction.index in picks:
                tiles.append(shown)
                tile_names.append(name)
            frames += 1
            yield shown

    try:
        overlay = write_webm(out / "overlay.webm", overlays(), fps=rate)
    finally:
        model.train(was_training)
    sheet = contact_sheet(tiles, labels=[f"frame {name}" for name in tile_names])
    sheet_path = write_png(
        out / "contact_sheet.png", np.concatenate([sheet, legend(texts, sheet.shape[1])])
    )
    return PredictResult(
        out=out,
        frames=frames,
        expressions=texts,
        masks=out / MASKS,
        expressions_json=expressions_json,
        overlay=overlay,
        contact_sheet=sheet_path,
        sheet_frames=tuple(tile_names),
        fps=rate,
        threshold=threshold,
        device=str(target),
    )
