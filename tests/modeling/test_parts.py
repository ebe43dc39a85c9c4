"""Cross-Modal MLP, (hierarchical) dense attention, tracking module: shapes and masking."""

from __future__ import annotations

import pytest
import torch

from refsam.modeling.cross_modal_mlp import CrossModalMLP
from refsam.modeling.features import ImageFeatures
from refsam.modeling.hierarchical_dense_attention import DenseAttention, HierarchicalDenseAttention
from refsam.modeling.tracking import ImplicitTrackingModule


def test_cross_modal_mlp_shapes_and_scaled_unit_norm():
    mlp = CrossModalMLP(text_dim=384, prompt_dim=64)
    linears = [m for m in mlp.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(384, 192), (192, 192), (192, 64)]
    words = mlp(torch.randn(2, 7, 384))
    sentence = mlp(torch.randn(2, 384))
    assert words.shape == (2, 7, 64) and sentence.shape == (2, 64)
    # unit vectors times one learned scale, initialised at sqrt(C) = 8
    assert torch.allclose(words.norm(dim=-1), torch.full((2, 7), 8.0), atol=1e-4)
    assert torch.allclose(sentence.norm(dim=-1), torch.full((2,), 8.0), atol=1e-4)
    with torch.no_grad():
        mlp.scale.fill_(2.0)
    assert torch.allclose(mlp(torch.randn(3, 384)).norm(dim=-1), torch.full((3,), 2.0), atol=1e-4)


def test_dense_attention_ignores_padding_tokens():
    torch.manual_seed(0)
    layer = DenseAttention(dim=16)
    feature = torch.randn(2, 16, 4, 4)
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, False, False, True], [True] * 5])
    out = layer(feature, text, mask)
    assert out.shape == (2, 16, 4, 4)
    changed = text.clone()
    changed[0, 2:4] = 100.0  # padding values must not matter
    assert torch.allclose(layer(feature, changed, mask), out, atol=1e-6)
    unmasked = layer(feature, changed, torch.ones_like(mask))
    assert not torch.allclose(unmasked[0], out[0], atol=1e-3)


def test_dense_attention_broadcasts_one_image_over_texts():
    torch.manual_seed(0)
    layer = DenseAttention(dim=8)
    feature, text = torch.randn(1, 8, 3, 3), torch.randn(3, 4, 8)
    mask = torch.ones(3, 4, dtype=torch.bool)
    out = layer(feature, text, mask)
    expanded = layer(feature.expand(3, -1, -1, -1), text, mask)
    assert out.shape == (3, 8, 3, 3) and torch.allclose(out, expanded, atol=1e-6)


def test_hierarchical_dense_attention_shapes_and_level_count():
    torch.manual_seed(0)
    hda = HierarchicalDenseAttention(encoder_dim=96, dim=64, num_intermediate=2)
    final = torch.randn(2, 64, 16, 16)
    levels = [torch.randn(2, 16, 16, 96) for _ in range(2)]
    text, mask = torch.randn(2, 6, 64), torch.ones(2, 6, dtype=torch.bool)
    out = hda(final, levels, text, mask)
    assert out.shape == (2, 64, 16, 16)
    assert hda.fuse.in_channels == 3 * 64
    with pytest.raises(ValueError, match="expected 2 levels"):
        hda(final, levels[:1], text, mask)
    levels[0] = levels[0] + 1.0  # every level contributes
    assert not torch.allclose(hda(final, levels, text, mask), out)


def test_tracking_module_shapes_and_dependence():
    torch.manual_seed(0)
    itm = ImplicitTrackingModule(dim=64, num_heads=8)
    track = itm.initial(3)
    assert track.shape == (3, 64)
    obj = torch.randn(3, 64)
    nxt = itm(track, obj)
    assert nxt.shape == (3, 64)
    assert not torch.allclose(itm(track, obj + 1), nxt)
    assert sum(p.numel() for p in itm.attention.parameters()) == 4 * 64 * 64 + 4 * 64


def _index_gradients(threads: int, rows: torch.Tensor) -> list[torch.Tensor]:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        embedding = torch.randn(4, 256, 16, 16, generator=generator, requires_grad=True)
        level = torch.randn(4, 16, 16, 96, generator=generator, requires_grad=True)
        picked = ImageFeatures(embedding, [level]).index(rows)
        upstream = [
            torch.randn(t.shape, generator=generator)
            for t in (picked.embedding, *picked.intermediates)
        ]
        loss = sum(
            (t * u).sum()
            for t, u in zip((picked.embedding, *picked.intermediates), upstream, strict=True)
        )
        loss.backward()
        return [embedding.grad, level.grad]
    finally:
        torch.set_num_threads(saved)


def test_image_features_index_adds_repeated_rows_in_a_fixed_order():
    """Rows repeat when expressions share a frame. Their gradients must be summed in one
    order whatever the thread count: the backward of advanced indexing (``x[rows]``) added
    them with atomic adds split across threads, in another order than one thread's (and
    from run to run), which made training not bit-reproducible (issue 7)."""
    rows = torch.tensor([0] * 5 + [1] * 9 + [2] * 7 + [3] * 6)
    one = _index_gradients(1, rows)
    for threads in (2, 4):
        for a, b in zip(one, _index_gradients(threads, rows), strict=True):
            assert torch.equal(a, b), f"{threads} threads summed the repeated rows differently"
    assert torch.equal(
        ImageFeatures(torch.arange(6.0).view(3, 2)).index(1).embedding, torch.tensor([[2.0, 3.0]])
    )
    assert torch.equal(
        ImageFeatures(torch.arange(6.0).view(3, 2)).index(torch.tensor([2, 2])).embedding,
        torch.tensor([[4.0, 5.0], [4.0, 5.0]]),
    )
