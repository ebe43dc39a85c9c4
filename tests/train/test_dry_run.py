"""``refsam train --dry-run`` on every shipped config (the real ViT recipes included).

The real recipes name files absent here: the official SAM checkpoint (replaced by a fake
one with every SAM key at its real shape, see conftest ``fake_sam_checkpoint``), the T5-3B
text encoder (replaced by the packaged MiniLM) and, for fine-tuning, the stage-1
checkpoint (``train.init_from`` cleared). Data paths point at the tiny demo shards.
Everything else — variant sizes, adapters, learning rates, stages — is the recipe's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.config import RefSAMConfig, load_config
from refsam.errors import ConfigError
from refsam.modeling.checkpoint import SamCheckpointError
from refsam.train.runner import train

from .conftest import CONFIGS, fake_sam_checkpoint

SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))
REAL = [name for name in SHIPPED if name.startswith("refsam-vit")]


def test_every_recipe_is_shipped() -> None:
    for size in ("vitb", "vitl", "vith"):
        assert f"refsam-{size}-pretrain-refcoco.yaml" in REAL
        assert f"refsam-{size}-finetune-ytvos.yaml" in REAL
    assert {"smoke.yaml", "demo-tiny-cpu.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", ["smoke.yaml", "demo-tiny-cpu.yaml"])
def test_dry_run_tiny_configs(
    name: str, make_config: Callable[..., RefSAMConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config(name=name)
    result = train(cfg, dry_run=True)
    assert result.dry_run and result.steps == 0
    assert not result.run_dir.exists()  # nothing written
    assert capsys.readouterr().out == ""  # the library returns its summary, the CLI prints it
    assert "first batch frames" in result.report and "trainable" in result.report
    assert set(result.trainable_params) >= {"cross_modal_mlp", "dense", "tracking", "mask_decoder"}


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_dry_run_real_recipes_with_stand_ins(
    name: str, make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    recipe = load_config(CONFIGS / name)
    assert (
        recipe.model.adapters and recipe.train.lr == 1e-4 and recipe.train.lr_mask_decoder == 1e-6
    )
    assert "image_encoder" not in recipe.model.trainable  # frozen SAM
    assert all(stage.frames_per_clip == 3 for stage in recipe.train.stages)
    sam = fake_sam_checkpoint(recipe.model.variant, tmp_path / "fake_sam.pth")
    assert sam.stat().st_size < 5_000_000
    cfg = make_config(
        f"model.sam_checkpoint={sam}",
        "model.text_encoder=null",
        "model.text_width=null",
        "train.init_from=null",
        name=name,
    )
    result = train(cfg, dry_run=True)
    assert "keys and shapes match" in result.report and "meta device" in result.report
    assert result.report.count("estimated peak memory") == len(recipe.train.stages)
    assert "WARNING" not in result.report  # every recipe fits train.device_memory_gb
    trainable = sum(result.trainable_params.values())
    total = sum(total for total, _ in result.parameter_counts.values())
    assert 0 < trainable < total / 5  # parameter-efficient: SAM frozen
    assert "adapters" in result.trainable_params


def test_missing_inputs_are_listed_together(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    cfg = make_config(
        f"data.shards_root={tmp_path / 'nothing'}", name="refsam-vitb-finetune-ytvos.yaml"
    )
    with pytest.raises(ConfigError) as info:
        train(cfg, dry_run=True)
    message = str(info.value)
    for needle in ("model.sam_checkpoint", "model.text_encoder", "train.init_from", "train.stages[0]",
                   "eval.sets", "refsam ingest"):  # fmt: skip
        assert needle in message


def test_wrong_sam_checkpoint_is_named(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    wrong = fake_sam_checkpoint("vit_b", tmp_path / "vit_b.pth")
    cfg = make_config(f"model.sam_checkpoint={wrong}", "model.text_encoder=null", "model.text_width=null",
                      "train.init_from=null",
                      name="refsam-vitl-pretrain-refcoco.yaml")  # fmt: skip
    with pytest.raises(SamCheckpointError, match="vit_b.pth: does not match"):
        train(cfg, dry_run=True)


def test_cli_dry_run_exit_codes(
    make_config: Callable[..., RefSAMConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = make_config()
    args = ["train", "--config", str(CONFIGS / "smoke.yaml"), "--dry-run", "--device", "cpu",
            "--set", f"data.heldout_root={cfg.data.heldout_root}", "--set", "tracking.enabled=false",
            "--set", f"train.output_dir={tmp_path}", "--set", f"data.shards_root={cfg.data.shards_root}"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "first batch frames" in out and "run dir:" in out and "dry run ok" in out
    bad = [*args[:-2], "--set", f"data.shards_root={tmp_path / 'missing'}"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("refsam: error:") and "no shards at" in err


def test_dry_run_checks_resume_and_init_from_like_every_path(
    make_config: Callable[..., RefSAMConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = make_config()
    args = ["train", "--config", str(CONFIGS / "smoke.yaml"), "--dry-run", "--device", "cpu",
            "--set", f"data.heldout_root={cfg.data.heldout_root}", "--set", "tracking.enabled=false",
            "--set", f"train.output_dir={tmp_path / 'outputs'}", "--set", f"data.shards_root={cfg.data.shards_root}"]  # fmt: skip
    assert main([*args, "--resume", str(tmp_path / "MISSING.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refsam: error: dry run found missing or bad inputs: --resume: ")
    assert "MISSING.pt: checkpoint not found" in err and "\n" not in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello")
    assert main([*args, "--resume", str(garbage)]) == 2
    assert "garbage.pt: not a readable checkpoint" in capsys.readouterr().err
    assert main([*args, "--set", f"train.init_from={garbage}"]) == 2
    assert "train.init_from: " in capsys.readouterr().err
    assert main([*args, "--set", f"train.init_from={tmp_path / 'nope.pt'}"]) == 2
    assert "train.init_from: " in capsys.readouterr().err

    assert main([*args, "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "resume auto: no checkpoint in" in out and "would start fresh" in out
    assert not (tmp_path / "outputs").exists()  # nothing written
    from refsam.train.state import build_model, save_model_checkpoint

    good = save_model_checkpoint(build_model(cfg), cfg, tmp_path / "good.pt")
    assert main([*args, "--resume", str(good)]) == 0
    assert f"resume: would continue {good}" in capsys.readouterr().out
    assert main([*args, "--set", f"train.init_from={good}"]) == 0


def test_dry_run_says_where_train_and_pipeline_write(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    cfg = make_config()
    out = train(cfg, dry_run=True).report
    base = Path(cfg.train.output_dir) / "smoke"
    assert (
        f"run dir: {base} (refsam train; refsam pipeline / make demo: "
        f"{base}-<YYYYmmdd-HHMMSS UTC>); {base}-latest -> the newest completed run" in out
    )


def test_dry_run_warns_when_a_stage_does_not_fit_the_gpu(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    """12 vit_h frames per GPU without activation checkpointing: ~100 GB > 80 GB."""
    sam = fake_sam_checkpoint("vit_h", tmp_path / "fake_sam.pth")
    overrides = [f"model.sam_checkpoint={sam}", "model.text_encoder=null", "model.text_width=null"]
    name = "refsam-vith-pretrain-refcoco.yaml"
    fits = train(make_config(*overrides, name=name), dry_run=True).report
    assert "activation checkpointing on" in fits and "WARNING" not in fits
    report = train(
        make_config(*overrides, "train.activation_checkpointing=false", name=name), dry_run=True
    ).report
    warning = next(line for line in report.splitlines() if line.startswith("WARNING"))
    assert "stage pretrain-refcoco needs about" in warning
    assert "more than train.device_memory_gb=80" in warning


def test_dry_run_checks_the_text_width_from_the_encoder_config(
    make_config: Callable[..., RefSAMConfig],
) -> None:
    cfg = make_config("model.text_width=1024", name="smoke.yaml")  # MiniLM is 384 wide
    with pytest.raises(ConfigError, match=r"model.text_width: the config says 1024.*width 384"):
        train(cfg, dry_run=True)
