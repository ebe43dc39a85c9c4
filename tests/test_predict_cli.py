"""``refsam predict``: per-frame PNG masks per expression, a browser-playable overlay, a sheet."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from refsam.cli import main
from refsam.config import load_config
from refsam.train.state import build_model, save_model_checkpoint

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(CONFIG, ["tracking.enabled=false"])
    torch.manual_seed(0)
    return save_model_checkpoint(
        build_model(cfg), cfg, tmp_path_factory.mktemp("ckpt") / "model.pt"
    )


@pytest.fixture(scope="module")
def frames_dir(demo_root: Path) -> Path:
    videos = demo_root / "raw" / "ref-youtube-vos" / "valid" / "JPEGImages"
    return sorted(videos.iterdir())[0]


def test_predict_on_a_frame_folder(checkpoint: Path, frames_dir: Path, tmp_path: Path) -> None:
    texts = ["the red circle", "a yellow shape moving up"]
    args = ["predict", "--checkpoint", str(checkpoint), "--video", str(frames_dir), "--out", str(tmp_path),
            "--device", "cpu", "--text", texts[0], "--text", texts[1]]  # fmt: skip
    assert main(args) == 0
    names = sorted(p.stem for p in frames_dir.glob("*.jpg"))
    with Image.open(next(frames_dir.glob("*.jpg"))) as image:
        width, height = image.size
    for k in range(2):
        folder = tmp_path / "masks" / f"exp-{k:02d}"
        assert sorted(p.stem for p in folder.glob("*.png")) == names
        mask = np.asarray(Image.open(folder / f"{names[0]}.png"))
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
    assert json.loads((tmp_path / "expressions.json").read_text()) == {
        "exp-00": texts[0],
        "exp-01": texts[1],
    }
    capture = cv2.VideoCapture(str(tmp_path / "overlay.webm"))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert fourcc in (b"VP90", b"VP80") and count == len(names)
    sheet = cv2.imread(str(tmp_path / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > height // 2


def test_predict_on_a_video_file(checkpoint: Path, frames_dir: Path, tmp_path: Path) -> None:
    frames = [cv2.imread(str(p)) for p in sorted(frames_dir.glob("*.jpg"))]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), "--video", str(video), "--out", str(out),
                 "--device", "cpu", "--text", "the blue square"]) == 0  # fmt: skip
    written = sorted(p.stem for p in (out / "masks" / "exp-00").glob("*.png"))
    assert written == [f"{i:05d}" for i in range(len(frames))]


def test_predict_bad_input_is_exit_2(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--device", "cpu"]
    assert main([*base, "--video", str(tmp_path / "missing"), "--text", "x"]) == 2
    assert "no such frame folder or video file" in capsys.readouterr().err
    assert main([*base, "--video", str(tmp_path), "--text", "  "]) == 2
    assert "empty expression" in capsys.readouterr().err
    assert main([*base, "--video", str(tmp_path)]) == 2  # --text is required
    assert main([*base, "--video", str(tmp_path), "--text", "x", "--threshold", "1.5"]) == 2
    assert "--threshold: expected a value in (0, 1), got '1.5'" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_from_the_registry_champion(
    checkpoint: Path,
    frames_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from refsam.tracking import promote_if_better, register_checkpoint, start_training_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIG)
    run = start_training_run(cfg, system_metrics=False)
    version = register_checkpoint(run.run_id, checkpoint, cfg, {"J&F": 0.5})
    run.end()
    assert promote_if_better(cfg.tracking.registered_model, version, 0.5, None).promoted
    uri = f"models:/{cfg.tracking.registered_model}@champion"
    out = tmp_path / "pred"
    args = ["predict", "--model", uri, "--video", str(frames_dir), "--text", "a red circle"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    n_frames = len(list(frames_dir.glob("*.jpg")))
    assert len(list((out / "masks").rglob("*.png"))) == n_frames
    # an alias that does not exist is bad input: exit 2, one line
    capsys.readouterr()
    bad = ["predict", "--model", f"models:/{cfg.tracking.registered_model}@nope"]
    assert main([*bad, "--video", str(frames_dir), "--text", "x", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
