"""``predict_video``: the library function behind ``refsam predict``, called from Python."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from refsam.config import load_config
from refsam.errors import UserError
from refsam.eval.video_predict import (
    FOLDER_FPS,
    PredictResult,
    check_output_folder,
    predict_video,
    sheet_indices,
)
from refsam.modeling.refsam import RefSAM
from refsam.train.state import build_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def model() -> RefSAM:
    torch.manual_seed(0)
    return build_model(load_config(CONFIG, ["tracking.enabled=false"]))


def _frames(count: int) -> list[np.ndarray]:
    frames = []
    for t in range(count):
        frame = np.full((48, 80, 3), 40, np.uint8)
        cv2.circle(frame, (10 + 6 * t, 24), 8, (220, 30, 30), -1)
        frames.append(frame)
    return frames


def _fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    for t, frame in enumerate(_frames(5)):
        cv2.imwrite(str(root / f"{t * 5:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return root


def test_predict_video_from_python(model: RefSAM, folder: Path, tmp_path: Path) -> None:
    model.train()
    out = tmp_path / "new" / "pred"
    result = predict_video(model, folder, [" a red circle ", "the background"], out,
                           device="cpu", progress=False)  # fmt: skip
    assert isinstance(result, PredictResult)
    names = [f"{t * 5:05d}" for t in range(5)]
    assert result.frames == 5 and result.expressions == ("a red circle", "the background")
    assert result.device == "cpu" and result.threshold == 0.5  # the config default
    for k in range(2):
        assert sorted(p.stem for p in (result.masks / f"exp-{k:02d}").glob("*.png")) == names
    assert json.loads(result.expressions_json.read_text()) == {
        "exp-00": "a red circle",
        "exp-01": "the background",
    }
    # a frame folder has no frame rate: the documented default; tiles named by frame
    assert result.fps == FOLDER_FPS and _fps(result.overlay) == pytest.approx(FOLDER_FPS)
    assert result.sheet_frames == tuple(names)
    assert cv2.imread(str(result.contact_sheet)) is not None
    assert model.training  # the caller's mode is restored


def test_predict_video_keeps_a_video_files_rate_unless_fps_is_given(
    model: RefSAM, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 24, (80, 48))
    for frame in _frames(3):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    kept = predict_video(model, video, ["a circle"], tmp_path / "a", device="cpu", progress=False)
    assert kept.fps == 24 and _fps(kept.overlay) == pytest.approx(24)
    assert kept.sheet_frames == ("00000", "00001", "00002")
    given = predict_video(model, video, ["a circle"], tmp_path / "b", device="cpu", fps=10,
                          threshold=0.3, progress=False)  # fmt: skip
    assert given.fps == 10 and _fps(given.overlay) == pytest.approx(10)
    assert given.threshold == 0.3


def test_bad_arguments_fail_before_anything_is_written(
    model: RefSAM, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cases = [
        (dict(texts=[" "]), "empty expression"),
        (dict(texts=[]), "no expression"),
        (dict(video=tmp_path / "missing.mp4"), "no such frame folder or video file"),
        (dict(video=tmp_path), "no image files"),
        (dict(fps=0.0), "--fps 0.0: expected a positive frame rate"),
        (dict(threshold=1.0), "expected a value in (0, 1)"),
        (dict(device="tpu"), "device 'tpu'"),
    ]
    for change, message in cases:
        kwargs = dict(video=folder, texts=["x"], progress=False) | change
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            predict_video(model, out=out, **kwargs)
        assert not out.exists()
    (tmp_path / "junk.mp4").write_text("not a video")
    with pytest.raises(UserError, match="OpenCV cannot open this video"):
        predict_video(model, tmp_path / "junk.mp4", ["x"], out, progress=False)


def test_check_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_output_folder(tmp_path / "missing")
    check_output_folder(tmp_path)  # empty
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        check_output_folder(tmp_path / "file", overwrite=True)
    out = tmp_path / "pred"
    (out / "masks" / "exp-00").mkdir(parents=True)
    (out / "masks" / "exp-00" / "00000.png").write_bytes(b"")
    (out / "expressions.json").write_text("{}")
    with pytest.raises(UserError, match=f"--out {out}: folder is not empty.*--overwrite"):
        check_output_folder(out)
    check_output_folder(out, overwrite=True)  # only a prediction's files: may be cleared
    for foreign, named in [("masks/exp-00/notes.txt", "masks/exp-00/notes.txt"),
                           ("masks/extra/a.png", "masks/extra"), ("notes.md", "notes.md")]:  # fmt: skip
        path = out / foreign
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
        with pytest.raises(UserError, match=f"does not write: {named}$"):
            check_output_folder(out, overwrite=True)
        path.unlink()
        if path.parent.name == "extra":
            path.parent.rmdir()
    (out / "masks" / "exp-01").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UserError, match="does not write: masks/exp-01"):
        check_output_folder(out, overwrite=True)
    (out / "masks" / "exp-01").unlink()
    monkeypatch.chdir(out / "masks")  # never clear the current folder or one above it
    with pytest.raises(UserError, match="current folder"):
        check_output_folder(out, overwrite=True)
    monkeypatch.setenv("HOME", str(out))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="home folder"):
        check_output_folder(out, overwrite=True)


def test_sheet_indices() -> None:
    assert sheet_indices(1) == {0} and sheet_indices(0) == {0}
    assert sheet_indices(3) == {0, 1, 2}
    assert sheet_indices(50) == {0, 7, 14, 21, 28, 35, 42, 49}
