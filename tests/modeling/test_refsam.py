"""RefSAM end to end (tiny): shapes, padding invariance, gradients in every ablation, bit-
reproducible gradients on several threads."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from refsam.errors import ConfigError
from refsam.modeling import GROUPS

TEXTS = ["the red circle on the left", "a cat", "the small green triangle moving to the right"]
COMBINATIONS = list(
    itertools.product(
        ["none", "sentence", "dense_attention", "hierarchical"], [True, False], [True, False]
    )
)


def test_shapes(build_tiny, random_frames):
    model = build_tiny().eval()
    image = model.encode_image(random_frames(2, 3, 128, 128))
    assert image.embedding.shape == (2, 64, 16, 16)
    assert [x.shape for x in image.intermediates] == [(2, 16, 16, 96)] * 2
    text = model.encode_text(TEXTS[:2])
    assert text.words.shape[::2] == (2, 64) and text.sentence.shape == (2, 64)
    state = model.init_track_state(2)
    assert state.track_token.shape == (2, 64)
    logits, iou, state = model.decode(image, text, state)
    assert logits.shape == (2, 1, 128, 128) and iou.shape == (2, 1)
    assert state.track_token.shape == (2, 64)
    clip = model.forward_clip(random_frames(2, 3, 3, 128, 128), TEXTS[:2])
    assert clip.shape == (2, 3, 128, 128)


@pytest.mark.parametrize("dense_path", ["sentence", "dense_attention", "hierarchical"])
def test_padded_batch_gives_the_same_masks_as_each_sample_alone(
    build_tiny, random_frames, dense_path
):
    model = build_tiny(dense_path=dense_path).eval()
    frames = random_frames(3, 2, 3, 128, 128)
    with torch.no_grad():
        together = model.forward_clip(frames, TEXTS)
        for row, text in enumerate(TEXTS):
            alone = model.forward_clip(frames[row : row + 1], [text])
            assert torch.allclose(together[row], alone[0], atol=1e-4), text


def test_one_frame_many_expressions_equals_per_sample_decoding(build_tiny, random_frames):
    model = build_tiny().eval()
    texts = ["a cat", "a dog", TEXTS[0]]  # two of equal length: decoded as one group
    with torch.no_grad():
        text = model.encode_text(texts)
        assert text.lengths[0] == text.lengths[1] != text.lengths[2]
        shared = model.encode_image(random_frames(1, 3, 128, 128))
        repeated = shared.index(torch.zeros(3, dtype=torch.long))
        state = model.init_track_state(3)
        a_logits, a_iou, a_state = model.decode(shared, text, state)
        b_logits, b_iou, b_state = model.decode(repeated, text, state)
    assert torch.allclose(a_logits, b_logits, atol=1e-5)
    assert torch.allclose(a_iou, b_iou, atol=1e-5)
    assert torch.allclose(a_state.track_token, b_state.track_token, atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        model.decode(shared.index(torch.zeros(2, dtype=torch.long)), text, state)


def test_expressions_sharing_a_clip_equal_each_on_its_own_copy(build_tiny, random_frames):
    model = build_tiny().eval()
    frames = random_frames(2, 3, 3, 128, 128)
    clip_index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        shared = model.forward_clip(frames, TEXTS, clip_index=clip_index)
        copies = model.forward_clip(frames[clip_index], TEXTS)
    assert shared.shape == (3, 3, 128, 128)
    assert torch.allclose(shared, copies, atol=1e-4)
    assert not torch.allclose(shared[0], shared[2], atol=1e-3)  # same clip, other text
    with pytest.raises(ValueError, match="need a clip_index"):
        model.forward_clip(frames, TEXTS)
    with pytest.raises(ValueError, match="indices below 2"):
        model.forward_clip(frames, TEXTS, clip_index=torch.tensor([0, 1, 2]))


def _train_two_steps(model, frames, targets, texts, *, with_iou: bool = False):
    params = [p for group in model.param_groups().values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        logits = model.forward_clip(frames, texts)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        if with_iou:
            text = model.encode_text(texts)
            image = model.encode_image(frames[:, 0])
            _, iou, _ = model.decode(image, text, model.init_track_state(len(texts)))
            loss = loss + iou.pow(2).mean()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        optimizer.step()
    return grads


@pytest.mark.parametrize(("dense_path", "tracking", "adapters"), COMBINATIONS)
def test_every_trainable_parameter_gets_a_gradient(
    build_tiny, random_frames, dense_path, tracking, adapters
):
    model = build_tiny(
        dense_path=dense_path,
        tracking=tracking,
        adapters=adapters,
        trainable=list(GROUPS),
        img_size=64,
    )
    model.train()
    frames = random_frames(2, 2, 3, 64, 64)
    targets = (random_frames(2, 2, 1, 64, 64, seed=1)[:, :, 0] > 127).float()
    grads = _train_two_steps(model, frames, targets, TEXTS[:2])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = sorted(n for n in trainable if grads[n] is None or not torch.any(grads[n] != 0))
    assert not no_grad, f"trainable parameters without gradient: {no_grad}"
    frozen_with_grad = sorted(n for n, g in grads.items() if n not in trainable and g is not None)
    assert not frozen_with_grad
    assert sum(len(g) for g in model.param_groups().values()) == len(trainable)


def test_default_recipe_freezes_sam_encoder_and_iou_head(build_tiny, random_frames):
    model = build_tiny(img_size=64).train()
    groups = model.param_groups()
    assert set(groups) == {"adapters", "cross_modal_mlp", "dense", "tracking", "mask_decoder"}
    frames = random_frames(2, 2, 3, 64, 64)
    grads = _train_two_steps(model, frames, torch.zeros(2, 2, 64, 64), TEXTS[:2])
    for name, grad in grads.items():
        frozen = name.startswith(
            ("text_encoder.", "prompt_encoder.", "mask_decoder.iou_prediction_head")
        )
        frozen |= name.startswith("image_encoder.") and ".adapters." not in name
        frozen |= name.startswith(
            "mask_decoder.output_hypernetworks_mlps."
        ) and not name.startswith("mask_decoder.output_hypernetworks_mlps.0.")
        assert (grad is None) == frozen, name
        assert (grad is None) or torch.any(grad != 0), name


def test_iou_loss_trains_the_iou_head(build_tiny, random_frames):
    model = build_tiny(iou_loss=True, img_size=64).train()
    head = {id(p) for p in model.mask_decoder.iou_prediction_head.parameters()}
    assert head <= {id(p) for p in model.param_groups()["mask_decoder"]}
    grads = _train_two_steps(
        model, random_frames(2, 2, 3, 64, 64), torch.zeros(2, 2, 64, 64), TEXTS[:2], with_iou=True
    )
    assert all(torch.any(g != 0) for n, g in grads.items() if "iou_prediction_head" in n)


def test_trainable_state_dict_round_trip(build_tiny, random_frames):
    model = build_tiny(seed=0).eval()
    state = model.trainable_state_dict()
    assert not any(k.startswith("text_encoder.") for k in state)
    other = build_tiny(seed=1).eval()
    frames = random_frames(1, 2, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(
            other.forward_clip(frames, TEXTS[:1]), model.forward_clip(frames, TEXTS[:1])
        )
        other.load_trainable_state_dict(state)
        assert torch.equal(
            other.forward_clip(frames, TEXTS[:1]), model.forward_clip(frames, TEXTS[:1])
        )
    without_tracking = build_tiny(tracking=False)
    with pytest.raises(ConfigError, match=r"unexpected \[.tracking\.attention"):
        without_tracking.load_trainable_state_dict(state)


def test_trainable_state_dict_skips_frozen_checkpoint_weights(build_tiny, tmp_path):
    from refsam.modeling import get_variant
    from refsam.modeling.sam import build_sam

    path = tmp_path / "sam.pth"
    torch.save(build_sam(get_variant("tiny")).state_dict(), path)
    model = build_tiny(sam_checkpoint=path)
    keys = set(model.trainable_state_dict())
    assert not any(k.startswith(("image_encoder.patch_embed", "prompt_encoder.")) for k in keys)
    assert "mask_decoder.iou_token.weight" in keys
    assert "image_encoder.blocks.5.adapters.attn.up.weight" in keys


def test_padded_uint8_frames_with_input_sizes_match_unpadded(build_tiny, random_frames):
    model = build_tiny().eval()
    frame = random_frames(1, 3, 96, 128)
    padded = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    padded[..., :96, :] = frame
    with torch.no_grad():
        direct = model.encode_image(frame).embedding
        from_loader = model.encode_image(padded, torch.tensor([[96, 128]])).embedding
        naive = model.encode_image(padded).embedding
    assert torch.equal(direct, from_loader)
    assert not torch.allclose(direct, naive)


def test_gradients_of_clips_shared_by_expressions_are_bit_reproducible(build_tiny, random_frames):
    """Expressions share their clip's frames (``clip_index`` repeats rows). The gradients
    must be the same bits run after run on several CPU threads (4 on fewer cores: threads get
    pre-empted). The repeated rows' gradients used to be added with atomic adds, in an order
    that changed with thread timing, so two trainings of one config drifted apart (issue 7;
    ``test_parts.py::test_image_features_index_adds_repeated_rows_in_a_fixed_order`` pins
    that op down). Groups of uneven size put a repeated row on two threads' shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        model = build_tiny(trainable=list(GROUPS)).train()
        frames = random_frames(4, 2, 3, 128, 128)
        clip_index = torch.tensor([0] * 5 + [1] * 9 + [2] * 7 + [3] * 6)
        texts = [f"{TEXTS[i % 3]} {i}" for i in range(len(clip_index))]
        targets = (random_frames(len(texts), 2, 128, 128, seed=1) > 180).float()
        params = [p for p in model.parameters() if p.requires_grad]
        digests = set()
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            logits = model.forward_clip(frames, texts, clip_index=clip_index)
            F.binary_cross_entropy_with_logits(logits, targets).backward()
            digests.add(b"".join(p.grad.numpy().tobytes() for p in params))
        assert len(digests) == 1
    finally:
        torch.set_num_threads(threads)


def _pseudo_clip_batch(random_frames):
    """3 clips of T = 3: an image repeated (RefCOCO pseudo-clip), a real clip, and a clip
    whose frames 1 and 2 repeat while frame 0 differs (per-frame augmentation excepted)."""
    image = random_frames(1, 1, 3, 64, 64, seed=3)
    video = random_frames(1, 3, 3, 64, 64, seed=4)
    mixed = torch.cat([random_frames(1, 1, 3, 64, 64, seed=5), image.repeat(1, 2, 1, 1, 1)], 1)
    return torch.cat([image.repeat(1, 3, 1, 1, 1), video, mixed])


def test_repeated_frames_are_encoded_once_with_equal_outputs_and_gradients(
    build_tiny, random_frames
):
    from refsam.modeling.encoder_pass import repeated_frames

    frames = _pseudo_clip_batch(random_frames)
    keep, source = repeated_frames(frames)
    assert keep.tolist() == [True, False, False, True, True, True, True, True, False]
    assert source.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5]
    texts = TEXTS + ["the blue square"]
    clip_index = torch.tensor([0, 1, 2, 0])
    targets = (random_frames(4, 3, 1, 64, 64, seed=6)[:, :, 0] > 127).float()
    results = {}
    for share in (False, True):
        model = build_tiny(trainable=list(GROUPS), img_size=64).train()
        model.share_repeated_frames = share
        encoded: list[int] = []
        hook = model.image_encoder.patch_embed.register_forward_hook(
            lambda _m, inputs, _o, seen=encoded: seen.append(inputs[0].shape[0])
        )
        logits = model.forward_clip(frames, texts, clip_index=clip_index)
        F.binary_cross_entropy_with_logits(logits, targets).backward()
        hook.remove()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = (encoded, logits.detach(), grads)
    assert results[False][0] == [9] and results[True][0] == [6]  # 6 distinct frames, not 9
    assert torch.allclose(results[True][1], results[False][1], atol=1e-5)
    shared_grads, plain_grads = results[True][2], results[False][2]
    assert shared_grads.keys() == plain_grads.keys() and any(
        "image_encoder" in n for n in plain_grads
    )
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_clips_without_repeated_frames_take_the_usual_path(build_tiny, random_frames):
    model = build_tiny(img_size=64).eval()
    frames = random_frames(2, 3, 3, 64, 64)
    with torch.no_grad():
        shared = model.forward_clip(frames, TEXTS[:2])
        model.share_repeated_frames = False
        plain = model.forward_clip(frames, TEXTS[:2])
    assert torch.equal(shared, plain)
