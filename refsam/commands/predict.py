"""``refsam predict``: segment one video for one or more expressions.

Writes to ``OUT``: ``masks/exp-<k>/<frame>.png`` (0/255, original size, one folder per
expression), ``expressions.json`` (k → text), ``overlay.webm`` (VP9, plays in browsers)
and ``contact_sheet.png`` (evenly spaced frames with every mask overlaid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from refsam.commands._types import probability
from refsam.errors import UserError

SHEET_FRAMES = 8


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="segment a video (frame folder or video file) for text expressions",
        description=(
            "Online inference on VIDEO (a folder of frames or a video file) for each --text; "
            "writes per-frame PNG masks per expression, an overlay .webm and a contact sheet."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt)")
    source.add_argument(
        "--model",
        help="registered model, e.g. models:/refsam@champion or models:/refsam/3 (MLflow store "
        "from MLFLOW_TRACKING_URI or the project's mlruns/)",
    )
    parser.add_argument("--video", type=Path, required=True, help="frame folder or video file")
    parser.add_argument(
        "--text", action="append", required=True, help="referring expression (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--fps", type=float, default=6.0, help="overlay video frame rate")
    parser.add_argument(
        "--threshold", type=probability, help="mask threshold (default: the config's)"
    )
    parser.set_defaults(func=run)


def frame_names(video: Path) -> tuple[list[str] | None, int]:
    """(file stems, count) for a frame folder; (None, approximate count) for a video file."""
    from refsam.eval.predictor import IMAGE_SUFFIXES

    if video.is_dir():
        names = sorted(p.stem for p in video.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return names, len(names)
    import cv2

    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return None, count


def run(args: argparse.Namespace) -> int:
    from refsam.eval.io import write_binary_png
    from refsam.eval.predictor import OnlinePredictor
    from refsam.eval.visualize import contact_sheet, legend, overlay_masks, write_png, write_webm
    from refsam.modeling.checkpoint import model_from_checkpoint

    if not args.video.exists():
        raise UserError(f"--video {args.video}: no such frame folder or video file")
    texts = [t.strip() for t in args.text]
    if any(not t for t in texts):
        raise UserError("--text: empty expression")
    checkpoint = args.checkpoint
    if args.model is not None:
        from refsam.tracking import resolve_model_uri

        checkpoint = resolve_model_uri(args.model)
    model, cfg = model_from_checkpoint(checkpoint, device="cpu")
    threshold = args.threshold if args.threshold is not None else cfg.eval.mask_threshold
    predictor = OnlinePredictor(model, device=args.device, threshold=threshold)
    names, count = frame_names(args.video)
    keep = set(
        np.linspace(0, max(count - 1, 0), min(SHEET_FRAMES, max(count, 1)))
        .round()
        .astype(int)
        .tolist()
    )
    sheet_tiles: list[np.ndarray] = []
    out = Path(args.out)
    n_frames = 0

    def overlays():  # generator of overlay frames for the video writer
        nonlocal n_frames
        from refsam.eval.predictor import iter_frames

        frames = iter_frames(args.video)
        for prediction in predictor.track(_tee(frames, buffer), texts):
            frame = buffer.pop(0)
            name = names[prediction.index] if names else f"{prediction.index:05d}"
            for k, mask in enumerate(prediction.masks):
                write_binary_png(out / "masks" / f"exp-{k:02d}" / f"{name}.png", mask)
            shown = overlay_masks(frame, list(prediction.masks))
            if prediction.index in keep:
                sheet_tiles.append(shown)
            n_frames += 1
            yield shown

    buffer: list[np.ndarray] = []
    video_path = write_webm(out / "overlay.webm", overlays(), fps=args.fps)
    sheet = contact_sheet(sheet_tiles or [np.zeros((8, 8, 3), np.uint8)])
    sheet_path = write_png(
        out / "contact_sheet.png", np.concatenate([sheet, legend(texts, sheet.shape[1])])
    )
    (out / "expressions.json").write_text(
        json.dumps({f"exp-{k:02d}": t for k, t in enumerate(texts)}, indent=2) + "\n"
    )
    print(f"{n_frames} frames × {len(texts)} expression(s) -> {out}")
    print(f"masks: {out / 'masks'}/exp-NN/<frame>.png")
    print(f"overlay video: {video_path}")
    print(f"contact sheet: {sheet_path}")
    return 0


def _tee(frames: Any, buffer: list[np.ndarray]) -> Any:
    """Yield frames while keeping each in ``buffer`` until its prediction is consumed."""
    for frame in frames:
        buffer.append(frame)
        yield frame
