"""Fixtures of the training tests: tiny demo shards, a config factory, a fake SAM file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from refsam.config import RefSAMConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


@pytest.fixture
def make_config(tiny_shards: Path, demo_root: Path, tmp_path: Path) -> Callable[..., RefSAMConfig]:
    """``make_config(*overrides, name="smoke.yaml")``: a shipped config on the tiny shards,
    writing under this test's tmp dir, tracking off."""

    def make(*overrides: str, name: str = "smoke.yaml") -> RefSAMConfig:
        base = [
            f"data.shards_root={tiny_shards}",
            f"data.heldout_root={demo_root / 'heldout'}",
            f"train.output_dir={tmp_path / 'outputs'}",
            "train.device=cpu",
            "tracking.enabled=false",
        ]
        return load_config(CONFIGS / name, [*base, *overrides])

    return make


def fake_sam_checkpoint(variant: str, path: Path) -> Path:
    """A stand-in for an official ``sam_vit_*.pth`` (absent here): every SAM key at its real
    shape, each tensor a broadcast view of one zero so the file stays a few hundred KB."""
    from refsam.modeling import RefSAM, get_variant

    with torch.device("meta"):
        model = RefSAM(spec=get_variant(variant), text_encoder=None, text_width=384)
    new = model.new_keys()
    state = {
        k: torch.zeros(()).expand(v.shape)
        for k, v in model.state_dict().items()
        if k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) and k not in new
    }
    torch.save(state, path)
    return path


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
