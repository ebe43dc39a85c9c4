"""Activation checkpointing and the computed memory estimate of `refsam train --dry-run`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from refsam.config import load_config
from refsam.modeling import build_refsam
from refsam.modeling.build import count_parameters, meta_refsam
from refsam.modeling.refsam import RefSAM
from refsam.modeling.variants import get_variant
from refsam.train.memory import estimate_training_memory, saved_activation_bytes

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
T5_3B = {
    "model_type": "t5", "d_model": 1024, "d_kv": 128, "d_ff": 16384, "num_layers": 24,
    "num_heads": 32, "vocab_size": 32128, "is_encoder_decoder": True,
}  # fmt: skip


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_meta_count_equals_the_bytes_saved_on_real_tensors(checkpointing):
    torch.manual_seed(0)
    real = RefSAM(spec=get_variant("tiny", img_size=64), text_encoder=None, text_width=384)
    meta = meta_refsam("tiny", text_width=384, img_size=64)
    real.train(), meta.train()
    on_cpu = saved_activation_bytes(real, 2, 3, checkpointing=checkpointing, device="cpu")
    on_meta = saved_activation_bytes(meta, 2, 3, checkpointing=checkpointing)
    assert on_cpu > 0 and on_meta == pytest.approx(on_cpu, rel=1e-3)  # within 0.1 %


def test_activation_checkpointing_keeps_gradients_and_saves_memory():
    texts = ["the red circle moving left", "a big blue square"]
    frames = torch.randint(0, 256, (2, 2, 3, 64, 64), dtype=torch.uint8)
    targets = (torch.rand(2, 2, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    grads = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_refsam("tiny", img_size=64).train()
        model.activation_checkpointing = checkpointing
        loss = F.binary_cross_entropy_with_logits(model.forward_clip(frames, texts), targets)
        loss.backward()
        grads[checkpointing] = {
            n: p.grad for n, p in model.named_parameters() if p.grad is not None
        }
    assert grads[True].keys() == grads[False].keys()
    assert any(".adapter" in n or "blocks" in n for n in grads[True])
    for name, grad in grads[False].items():
        assert torch.allclose(grads[True][name], grad, rtol=1e-5, atol=1e-7), name
    model = meta_refsam("vit_b", text_width=1024)
    model.train()
    plain = saved_activation_bytes(model, 1, 1, checkpointing=False)
    kept = saved_activation_bytes(model, 1, 1, checkpointing=True)
    assert 2.8e9 < plain < 3.4e9  # ≈3 GB per 1024-px vit_b frame in fp32 (issue 21)
    assert kept < plain / 5


@pytest.fixture(scope="module")
def t5_3b_config(tmp_path_factory) -> Path:
    """A folder with t5-3b's config.json only: enough to size the encoder on meta."""
    import json

    folder = tmp_path_factory.mktemp("t5-3b")
    (folder / "config.json").write_text(json.dumps(T5_3B))
    return folder


def test_recipe_estimates_fit_80_gb_with_checkpointing_where_the_recipe_says(t5_3b_config):
    for path in sorted(CONFIGS.glob("refsam-vit*.yaml")):
        cfg = load_config(path, [f"model.text_encoder={t5_3b_config}"])
        for estimate in estimate_training_memory(cfg):
            assert estimate.peak_gb < cfg.train.device_memory_gb, (path.name, estimate)
            assert estimate.weights_gb > 5.0  # T5-3B's encoder alone is ~5.4 GB in fp32
    vith = load_config(
        CONFIGS / "refsam-vith-pretrain-refcoco.yaml",
        [f"model.text_encoder={t5_3b_config}", "train.activation_checkpointing=false"],
    )
    (unchecked,) = estimate_training_memory(vith)
    assert unchecked.peak_gb > 80  # 12 vit_h frames per GPU do not fit without it


@pytest.mark.parametrize(
    ("variant", "millions"), [("vit_b", 9.9), ("vit_l", 19.1), ("vit_h", 33.0)]
)
def test_trainable_counts_with_t5_3b_match_the_paper_within_3_percent(variant, millions):
    counts = count_parameters(variant, text_width=1024)
    trainable = sum(t for _, t in counts.values()) if "total" not in counts else counts["total"][1]
    assert abs(trainable / 1e6 - millions) / millions < 0.03
