"""``refsam predict``: segment one video for one or more expressions.

Parses and checks the arguments (before torch or the model load, so a mistake is reported
at once), then runs :func:`refsam.eval.video_predict.predict_video` and prints where its
outputs went. See that module for the files written to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from refsam.commands._types import add_model_source, positive_float, probability
from refsam.errors import UserError
from refsam.paths import not_found_message


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="segment a video (frame folder or video file) for text expressions",
        description=(
            "Online inference on VIDEO (a folder of frames or a video file) for each --text; "
            "writes per-frame PNG masks per expression, an overlay .webm and a contact sheet "
            "to OUT (a new or empty folder, or --overwrite)."
        ),
    )
    add_model_source(parser)
    parser.add_argument("--video", type=Path, required=True, help="frame folder or video file")
    parser.add_argument(
        "--text", action="append", required=True, help="referring expression (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the previous prediction in OUT (a folder holding other files is refused)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument(
        "--fps",
        type=positive_float,
        help="overlay video frame rate (default: the video file's own; 6 for a frame folder)",
    )
    parser.add_argument(
        "--threshold", type=probability, help="mask threshold (default: the config's)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refsam.eval.frames import probe_video
    from refsam.eval.video_predict import check_output_folder, clean_texts, frame_rate

    texts = clean_texts(args.text)
    frame_rate(args.fps, probe_video(args.video))
    check_output_folder(args.out, overwrite=args.overwrite)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError("--checkpoint " + not_found_message(args.checkpoint))
    # the cheap checks passed: now torch (the device), MLflow (a registry URI), the model
    from refsam.eval.video_predict import predict_video
    from refsam.modeling.device import resolve_device

    device = resolve_device(args.device)
    checkpoint = args.checkpoint
    if args.model is not None:
        from refsam.tracking import resolve_model_uri

        checkpoint = resolve_model_uri(args.model)
    result = predict_video(
        checkpoint, args.video, texts, args.out, device=device, fps=args.fps,
        threshold=args.threshold, overwrite=args.overwrite, progress=True,
    )  # fmt: skip
    print(
        f"{result.frames} frames × {len(texts)} expression(s) -> {result.out} "
        f"({result.device}, mask threshold {result.threshold:g})"
    )
    print(f"masks: {result.masks}/exp-NN/<frame>.png")
    print(f"overlay video: {result.overlay} ({result.fps:g} fps)")
    print(f"contact sheet: {result.contact_sheet}")
    return 0
