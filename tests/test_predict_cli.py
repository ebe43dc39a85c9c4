"""``refsam predict``: per-frame PNG masks per expression, a browser-playable overlay, a sheet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from refsam.cli import main
from refsam.config import load_config
from refsam.train.state import build_model, save_model_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "smoke.yaml"
NO_GPU = not torch.cuda.is_available()


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args…`` with this checkout first on the import path."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)  # fmt: skip


def _fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps


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
    assert _fps(tmp_path / "overlay.webm") == pytest.approx(6)  # a frame folder's default
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
    assert _fps(out / "overlay.webm") == pytest.approx(5)  # the source's frame rate


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
    assert (
        main([*bad, "--video", str(frames_dir), "--text", "x", "--out", str(tmp_path / "p2")]) == 2
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_rerun_into_the_same_folder_needs_overwrite(
    checkpoint: Path, frames_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred"
    base = ["predict", "--checkpoint", str(checkpoint), "--video", str(frames_dir), "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main([*base, "--text", "a red circle", "--text", "a blue square"]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main([*base, "--text", "a yellow shape"]) == 2  # stale masks would mix in
    err = capsys.readouterr().err
    assert f"--out {out}: folder is not empty" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert main([*base, "--text", "a yellow shape", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["exp-00"]  # exp-01 is gone
    assert json.loads((out / "expressions.json").read_text()) == {"exp-00": "a yellow shape"}
    # a folder that holds anything predict does not write is never cleared
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*base, "--text", "x", "--overwrite"]) == 2
    assert "does not write: notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (out / "masks" / "exp-00").is_dir()


_BAD_ARGS = """
import json, sys
from refsam.cli import main
ckpt, video, tmp = sys.argv[1:]
runs = {
    "missing video": ["--checkpoint", ckpt, "--video", tmp + "/missing.mp4", "--out", tmp + "/o1"],
    "missing checkpoint": ["--checkpoint", tmp + "/nope.pt", "--video", video, "--out", tmp + "/o2"],
    "non-empty out": ["--checkpoint", ckpt, "--video", video, "--out", tmp + "/full"],
    "bad fps": ["--checkpoint", ckpt, "--video", video, "--out", tmp + "/o3", "--fps", "0"],
    "bad threshold": ["--checkpoint", ckpt, "--video", video, "--out", tmp + "/o4", "--threshold", "2"],
}
codes = {k: main(["predict", *v, "--text", "x"]) for k, v in runs.items()}
print(json.dumps({"codes": codes, "loaded": [m for m in ("torch", "mlflow", "prefect") if m in sys.modules]}))
"""


def test_bad_arguments_are_reported_before_torch_loads(
    checkpoint: Path, frames_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.png").write_bytes(b"")
    result = _python(_BAD_ARGS, str(checkpoint), str(frames_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["codes"].values()) == {2}, report
    assert report["loaded"] == []  # neither the CLI's parser nor the checks load them
    assert len(result.stderr.strip().splitlines()) == len(report["codes"])  # one line each
    assert "checkpoint not found" in result.stderr
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_the_output_folder_is_created_only_when_work_starts(
    frames_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    out = tmp_path / "new" / "pred"
    args = ["predict", "--checkpoint", str(broken), "--video", str(frames_dir), "--out", str(out),
            "--device", "cpu", "--text", "x"]  # fmt: skip
    assert main(args) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_exit_2(
    checkpoint: Path, frames_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred"
    commands = [
        ["predict", "--checkpoint", str(checkpoint), "--video", str(frames_dir), "--out", str(out),
         "--text", "x"],
        ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "ref-davis17", "--split", "valid",
         "--out", str(out)],
        ["train", "--config", str(CONFIG), "--dry-run", "--no-tracking"],
    ]  # fmt: skip
    for command in commands:
        assert main([*command, "--device", "cuda"]) == 2, command
        err = capsys.readouterr().err.strip()
        assert err == (
            "refsam: error: device 'cuda': no CUDA device is available on this machine "
            "(use cpu or auto)"
        )
    assert not out.exists()


def test_predict_run_shows_progress_keeps_the_frame_rate_and_no_opencv_notice(
    checkpoint: Path, frames_dir: Path, tmp_path: Path
) -> None:
    frames = [cv2.imread(str(p)) for p in sorted(frames_dir.glob("*.jpg"))][:3]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*"mp4v"), 24, frames[0].shape[1::-1]
    )
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    code = "import sys; from refsam.cli import main; sys.exit(main(sys.argv[1:]))"
    result = _python(code, "predict", "--checkpoint", str(checkpoint), "--video", str(video),
                     "--out", str(out), "--device", "cpu", "--text", "a red circle")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "is not supported with codec id" not in result.stderr  # OpenCV's WebM tag notice
    assert "VP90" not in result.stderr
    assert "predict clip.mp4" in result.stderr and "3/3" in result.stderr  # the progress bar
    assert _fps(out / "overlay.webm") == pytest.approx(24)
    assert "overlay video:" in result.stdout and "(24 fps)" in result.stdout
