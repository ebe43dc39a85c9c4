"""Adapters: zero-init identity at step 0, placed in the second half, SAM's names untouched."""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Block

from refsam.modeling import get_variant
from refsam.modeling.adapters import Adapter, attach_adapters
from refsam.modeling.preprocess import normalize_and_pad
from refsam.modeling.sam import build_image_encoder


def _encoder_pair():
    spec = get_variant("tiny")
    torch.manual_seed(0)
    vanilla = build_image_encoder(spec).eval()
    adapted = build_image_encoder(spec).eval()
    adapted.load_state_dict(vanilla.state_dict())
    adapters = attach_adapters(adapted, spec.adapter_blocks, ratio=0.25, mlp_scale=0.5)
    return vanilla, adapted, adapters


def test_adapted_encoder_equals_sam_at_step_zero(random_frames):
    vanilla, adapted, adapters = _encoder_pair()
    x = normalize_and_pad(random_frames(2, 3, 128, 128), 128)
    with torch.no_grad():
        assert torch.equal(adapted(x), vanilla(x))
        for module in adapters:  # non-zero up-projections do change the output
            torch.nn.init.normal_(module.attn.up.weight, std=0.1)
        assert not torch.allclose(adapted(x), vanilla(x))


def test_adapter_placement_and_names():
    vanilla, adapted, adapters = _encoder_pair()
    assert len(adapters) == 3
    assert all(type(block) is Block for block in adapted.blocks)  # SAM's class, unmodified
    names = set(dict(adapted.named_parameters())) - set(dict(vanilla.named_parameters()))
    assert {n.split(".")[1] for n in names} == {"3", "4", "5"}
    assert all(".adapters." in n for n in names)
    assert set(dict(vanilla.named_parameters())) <= set(dict(adapted.named_parameters()))


def test_adapter_bottleneck_shapes_and_zero_up():
    adapter = Adapter(dim=96, ratio=0.25)
    assert adapter.down.weight.shape == (24, 96) and adapter.up.weight.shape == (96, 24)
    assert torch.count_nonzero(adapter.up.weight) == 0
    out = adapter(torch.randn(2, 4, 4, 96))
    assert out.shape == (2, 4, 4, 96) and torch.count_nonzero(out) == 0


def test_mlp_adapter_is_parallel_and_scaled():
    """mlp output = mlp(n) + 0.5·adapter(n) for the MLP's input n (checked on one block)."""
    _, adapted, adapters = _encoder_pair()
    block, module = adapted.blocks[3], adapters[0]
    torch.nn.init.normal_(module.mlp.up.weight, std=0.1)
    n = torch.randn(1, 16, 16, 96)
    with torch.no_grad():
        hooked = block.mlp(n)
        plain = block.mlp.lin2(block.mlp.act(block.mlp.lin1(n)))
        assert torch.allclose(hooked, plain + 0.5 * module.mlp(n), atol=1e-6)
