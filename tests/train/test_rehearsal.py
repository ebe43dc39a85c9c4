"""Real-size rehearsal of a GPU run on the CPU (issue 21): the vit_b recipe at 1024 px with a
random SAM checkpoint in the official key format and a small random T5 saved as the Hub
ships it, trained 2 steps on a shard of real-size frames (1280×720 JPEGs): 1 step, a
checkpoint, ``--resume auto`` for the 2nd step, then 1 evaluation video. Everything runs
through the CLI as a user would; only the sizes of the data and the step count are small.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from refsam.cli import main
from refsam.data.shards import ingest
from refsam.modeling.checkpoint import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZE = (1280, 720)  # width, height of a real Ref-YouTube-VOS frame
FRAMES = ["00000", "00005"]


def _real_size_ytvos(demo_root: Path, out: Path) -> Path:
    """The tiny demo's first 2 Ref-YouTube-VOS train videos, cut to 2 frames and resized
    to 1280×720 (JPEG quality 90, masks nearest-neighbour), in the published layout."""
    source = demo_root / "raw" / "ref-youtube-vos"
    meta = json.loads((source / "train" / "meta.json").read_text())
    expressions = json.loads(
        (source / "meta_expressions" / "train" / "meta_expressions.json").read_text()
    )
    videos = sorted(meta["videos"])[:2]
    for video in videos:
        for kind, suffix, resample in (("JPEGImages", ".jpg", Image.BILINEAR),
                                       ("Annotations", ".png", Image.NEAREST)):  # fmt: skip
            folder = out / "train" / kind / video
            folder.mkdir(parents=True)
            for frame in FRAMES:
                image = Image.open(source / "train" / kind / video / f"{frame}{suffix}")
                big = image.resize(SIZE, resample)
                if suffix == ".jpg":
                    big.save(folder / f"{frame}.jpg", quality=90)
                else:
                    big.save(folder / f"{frame}.png")
        for obj in meta["videos"][video]["objects"].values():
            obj["frames"] = [f for f in obj["frames"] if f in FRAMES]
        expressions["videos"][video]["frames"] = FRAMES
    meta["videos"] = {v: meta["videos"][v] for v in videos}
    expressions["videos"] = {v: expressions["videos"][v] for v in videos}
    (out / "train" / "meta.json").write_text(json.dumps(meta))
    (out / "meta_expressions" / "train").mkdir(parents=True)
    (out / "meta_expressions" / "train" / "meta_expressions.json").write_text(
        json.dumps(expressions)
    )
    return out


def _official_sam_vit_b(path: Path) -> Path:
    """A random SAM ViT-B saved as ``sam_vit_b_01ec64.pth`` is: segment_anything's own
    ``Sam`` state dict (image_encoder.*, prompt_encoder.*, mask_decoder.*)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


@pytest.mark.slow
def test_vit_b_at_1024_px_trains_resumes_and_evaluates_on_real_size_frames(
    demo_root: Path, hub_style_t5: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _real_size_ytvos(demo_root, tmp_path / "raw" / "ref-youtube-vos")
    with Image.open(next((raw / "train" / "JPEGImages").rglob("*.jpg"))) as frame:
        assert frame.size == SIZE
    shards = tmp_path / "shards"
    summary = ingest("ref-youtube-vos", "train", raw, shards, shard_size=2, progress=False)
    assert summary.videos == 2 and summary.frames == 4 and summary.quarantined == 0
    sam = _official_sam_vit_b(tmp_path / "sam_vit_b_01ec64.pth")
    recipe = yaml.safe_load((CONFIGS / "refsam-vitb-finetune-ytvos.yaml").read_text())
    recipe["data"].update(shards_root=str(shards), loader_workers=0, heldout_root=None)
    recipe["model"].update(sam_checkpoint=str(sam), text_encoder=str(hub_style_t5), text_width=32)
    recipe["train"].update(
        devices=1, device="cpu", init_from=None, output_dir=str(tmp_path / "outputs"),
        checkpoint_every=1, log_every=1,
        stages=[{**recipe["train"]["stages"][0], "steps": 1, "batch_size": 1, "frames_per_clip": 1}],
    )  # fmt: skip
    recipe["eval"].update(sets=[], curve_every=0)
    recipe["tracking"] = {"enabled": False}
    config = tmp_path / "rehearsal.yaml"
    config.write_text(yaml.safe_dump(recipe))

    assert main(["train", "--config", str(config)]) == 0  # step 1, checkpoint
    run = tmp_path / "outputs" / recipe["train"]["run_name"]
    first = load_checkpoint(run / "checkpoints" / "step-00000001.pt")
    assert first["progress"]["step"] == 1
    steps2 = ["--set", "train.stages.0.steps=2"]
    assert main(["train", "--config", str(config), *steps2, "--resume", "auto"]) == 0
    second = load_checkpoint(run / "checkpoints" / "step-00000002.pt")
    assert second["progress"]["step"] == 2 and second["progress"]["stage_step"] == 2
    changed = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert any(k.startswith("image_encoder") and "adapter" in k for k in changed)  # adapters train
    assert all(np.isfinite(v.float().numpy()).all() for v in second["model"].values())
    capsys.readouterr()

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "step-00000002.pt"),
                 "--dataset", "ref-youtube-vos", "--split", "train", "--shards", str(shards),
                 "--out", str(out), "--max-videos", "1", "--device", "cpu"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["frames"] == len(FRAMES) and 0.0 <= metrics["J&F"] <= 1.0
    masks = sorted((out / "predictions").rglob("*.png"))
    assert masks and Image.open(masks[0]).size == SIZE
    shutil.rmtree(tmp_path / "outputs")  # 2 checkpoints of vit_b's trained parts
