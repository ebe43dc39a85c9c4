"""Strict loading of SAM checkpoints: vanilla SAM weights give identical SAM outputs."""

from __future__ import annotations

import pytest
import torch

from refsam.errors import UserError
from refsam.modeling import SamCheckpointError, build_refsam, get_variant
from refsam.modeling.preprocess import normalize_and_pad
from refsam.modeling.sam import build_sam


@pytest.fixture
def vanilla_checkpoint(tmp_path):
    """A state dict saved from segment_anything's own Sam at the tiny size."""
    torch.manual_seed(123)
    sam = build_sam(get_variant("tiny"))
    for p in sam.parameters():  # SAM zero-inits pos/rel-pos embeddings: make every tensor count
        p.data.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def test_vanilla_state_dict_loads_and_matches_sam(vanilla_checkpoint, text_encoder, random_frames):
    sam, path = vanilla_checkpoint
    model = build_refsam("tiny", sam_checkpoint=path, text_encoder=text_encoder).eval()
    file_keys = set(torch.load(path, weights_only=True))
    own = set(model.state_dict())
    assert file_keys <= own
    assert own - file_keys == model.new_keys()
    assert all(
        not k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder."))
        or ".adapters." in k
        for k in own - file_keys
    )

    frames = random_frames(2, 3, 128, 128)
    with torch.no_grad():
        ours = model.encode_image(frames)
        theirs = sam.image_encoder(normalize_and_pad(frames, 128))
        assert torch.equal(ours.embedding, theirs)
        sparse = torch.randn(1, 5, 64)
        dense = sam.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1).expand(1, -1, 16, 16)
        pe = sam.prompt_encoder.get_dense_pe()
        assert torch.equal(pe, model.prompt_encoder.get_dense_pe())
        want_masks, want_iou = sam.mask_decoder(
            theirs[:1], pe, sparse, dense, multimask_output=False
        )
        masks, iou, tokens = model.mask_decoder.decode(ours.embedding[:1], pe, sparse, dense)
    assert torch.equal(masks, want_masks) and torch.equal(iou, want_iou)
    assert tokens.shape == (1, 1 + 4 + 5, 64)


def test_wrong_size_checkpoint_names_mismatched_keys(tmp_path, text_encoder):
    sam = build_sam(get_variant("tiny", embed_dim=64, depth=4, global_attn_indexes=(1, 3)))
    path = tmp_path / "other.pth"
    torch.save(sam.state_dict(), path)
    with pytest.raises(SamCheckpointError) as info:
        build_refsam("tiny", sam_checkpoint=path, text_encoder=text_encoder)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert str(path) in message
    assert "28 SAM key(s) missing" in message  # blocks 4 and 5 (depth 4 vs 6)
    assert "image_encoder.blocks.4.attn.qkv.weight" in message
    assert "shape mismatch" in message
    assert "image_encoder.blocks.0.attn.qkv.weight (file (192, 64), model (288, 96))" in message


def test_foreign_and_unreadable_files_fail(tmp_path, text_encoder):
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(SamCheckpointError, match="backbone.conv.weight"):
        build_refsam("tiny", sam_checkpoint=foreign, text_encoder=text_encoder)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SamCheckpointError, match="garbage.pth"):
        build_refsam("tiny", sam_checkpoint=garbage, text_encoder=text_encoder)
    pickled = tmp_path / "pickled.pth"
    torch.save({"config": {"lr": 1}}, pickled)
    with pytest.raises(SamCheckpointError, match="flat state dict"):
        build_refsam("tiny", sam_checkpoint=pickled, text_encoder=text_encoder)
    with pytest.raises(SamCheckpointError, match="not found"):
        build_refsam("tiny", sam_checkpoint=tmp_path / "missing.pth", text_encoder=text_encoder)


def test_partial_checkpoint_lists_missing_keys(vanilla_checkpoint, tmp_path, text_encoder):
    _, path = vanilla_checkpoint
    state = torch.load(path, weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(SamCheckpointError, match="mask_decoder.iou_token.weight"):
        build_refsam("tiny", sam_checkpoint=partial, text_encoder=text_encoder)
