"""RefSAM: SAM + text prompts + hierarchical dense attention + implicit tracking (MODEL.md).

Per frame: the image encoder runs once (text-independent); the text is encoded once per
clip or video; :meth:`RefSAM.decode` turns (image, text, track state) into mask logits at
the padded input size, IoU scores and the next track state. SAM's three parts keep SAM's
names (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) so official checkpoints
load strictly; the new modules are ``text_encoder`` (frozen), ``cross_modal_mlp``,
``dense`` (per ``dense_path``), ``tracking`` and the adapters inside the encoder blocks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from refsam.errors import ConfigError
from refsam.modeling.adapters import attach_adapters
from refsam.modeling.cross_modal_mlp import CrossModalMLP
from refsam.modeling.encoder_pass import repeated_frames, run_blocks
from refsam.modeling.features import ImageFeatures, TextFeatures, TrackState
from refsam.modeling.groups import DEFAULT_TRAINABLE, ParameterGroups
from refsam.modeling.hierarchical_dense_attention import DenseAttention, HierarchicalDenseAttention
from refsam.modeling.mask_decoder import TokenMaskDecoder
from refsam.modeling.preprocess import normalize_and_pad, upscale_logits
from refsam.modeling.sam import build_image_encoder, build_prompt_encoder, decoder_kwargs
from refsam.modeling.temporal import PIXELS_PER_CELL, FrameWindow, MotionWindow
from refsam.modeling.text_encoder import TextEncoder
from refsam.modeling.tracking import ImplicitTrackingModule
from refsam.modeling.variants import VariantSpec

log = logging.getLogger(__name__)

DensePath = Literal["none", "sentence", "dense_attention", "hierarchical"]
TemporalPath = Literal["none", "window", "flow"]
PIXEL_RADIUS = 3  # temporal: flow matches displacements up to 3 px of its pixel level


class RefSAM(ParameterGroups, nn.Module):
    """Referring video object segmentation on top of SAM (see module docstring)."""

    def __init__(
        self,
        *,
        spec: VariantSpec,
        text_encoder: TextEncoder | None,
        text_width: int | None = None,
        dense_path: DensePath = "hierarchical",
        tracking: bool = True,
        adapters: bool = True,
        temporal: TemporalPath = "none",
        temporal_window: int = 2,
        iou_loss: bool = False,
        trainable: tuple[str, ...] | list[str] = DEFAULT_TRAINABLE,
    ) -> None:
        """``text_encoder=None`` (with ``text_width``) builds a model that cannot encode text:
        only for counting parameters. ``temporal="window"`` adds the online
        :class:`~refsam.modeling.temporal.MotionWindow` over ``temporal_window`` frames;
        ``"flow"`` the same window with its pixel level (block-matched motion) on."""
        super().__init__()
        if dense_path not in ("none", "sentence", "dense_attention", "hierarchical"):
            raise ConfigError(f"model.dense_path: unknown value {dense_path!r}")
        if temporal not in ("none", "window", "flow"):
            raise ConfigError(f"model.temporal: unknown value {temporal!r}")
        self.spec = spec
        self.img_size = spec.img_size
        self.dense_path = dense_path
        self.iou_loss = iou_loss
        self.sam_checkpoint: str | None = None
        dim = spec.prompt_dim

        self.image_encoder = build_image_encoder(spec)
        self.prompt_encoder = build_prompt_encoder(spec)
        self.mask_decoder = TokenMaskDecoder(**decoder_kwargs(spec))
        if adapters:
            attach_adapters(
                self.image_encoder,
                spec.adapter_blocks,
                ratio=spec.adapter_ratio,
                mlp_scale=spec.adapter_mlp_scale,
            )

        self.text_encoder = text_encoder
        width = text_encoder.width if text_encoder is not None else text_width
        if width is None:
            raise ValueError("text_width is required when no text encoder is given")
        self.text_width = width
        self.cross_modal_mlp = CrossModalMLP(text_dim=width, prompt_dim=dim)

        self.levels = spec.intermediate_blocks if dense_path == "hierarchical" else ()
        self.dense: nn.Module | None = None
        if dense_path == "dense_attention":
            self.dense = DenseAttention(dim=dim)
        elif dense_path == "hierarchical":
            self.dense = HierarchicalDenseAttention(
                encoder_dim=spec.embed_dim, dim=dim, num_intermediate=len(self.levels)
            )
        self.tracking = (
            ImplicitTrackingModule(dim=dim, num_heads=spec.tracking_heads) if tracking else None
        )
        self.temporal = (
            MotionWindow(
                dim=dim,
                patch_dim=spec.embed_dim,
                window=temporal_window,
                pixel_radius=PIXEL_RADIUS if temporal == "flow" else None,
                text_dim=width,
            )
            if temporal != "none"
            else None
        )
        self._warned_single = False
        # forward_clip encodes a frame repeated in its clip once (off only to measure it)
        self.share_repeated_frames = True
        # recompute encoder blocks in the backward pass (train.activation_checkpointing)
        self.activation_checkpointing = False
        self.set_trainable(trainable)

    def train(self, mode: bool = True) -> RefSAM:
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    # ---------------------------------------------------------------- forward parts
    def encode_text(self, texts: list[str]) -> TextFeatures:
        """Strings → text features in prompt space: words B×L×C (0 at padding), sentence B×C."""
        if self.text_encoder is None:
            raise ConfigError(
                "this model was built without a text encoder (parameter counting only)"
            )
        return self.project_text(self.text_encoder(texts))

    def project_text(self, raw: TextFeatures) -> TextFeatures:
        """The text encoder's features → prompt space (the Cross-Modal MLP)."""
        words = self.cross_modal_mlp(raw.words) * raw.mask.unsqueeze(-1)
        sentence = self.cross_modal_mlp(raw.sentence)
        return TextFeatures(words=words, sentence=sentence, mask=raw.mask, encoder_words=raw.words)

    def encode_image(
        self, frames: torch.Tensor, input_sizes: torch.Tensor | None = None
    ) -> ImageFeatures:
        """B×3×h×w frames (uint8/float 0–255, h, w ≤ img_size) → :class:`ImageFeatures`.

        Normalises and pads (``preprocess.normalize_and_pad``; pass ``input_sizes`` B×2
        for frames already zero-padded to S×S) and runs SAM's encoder block by block to
        keep the intermediate levels the hierarchical dense attention needs.
        """
        x = normalize_and_pad(frames.to(self.device), self.img_size, input_sizes)
        pixels = None
        if self.temporal is not None and self.temporal.pixel_radius:
            pixels = F.avg_pool2d(x, self.spec.patch_size // PIXELS_PER_CELL)
        encoder = self.image_encoder
        x = encoder.patch_embed(x)
        patches = x if self.temporal is not None else None
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        x, intermediates = run_blocks(
            encoder, x, self.levels, checkpointing=self.activation_checkpointing
        )
        return ImageFeatures(encoder.neck(x.permute(0, 3, 1, 2)), intermediates, patches, pixels)

    def init_track_state(self, batch_size: int) -> TrackState:
        """Frame-0 state: the learned initial track token B×C (None without tracking)."""
        if self.tracking is None:
            return TrackState(None)
        return TrackState(self.tracking.initial(batch_size))

    def init_frame_window(self) -> FrameWindow:
        """Frame-0 temporal state: no past frames (stays empty with ``temporal: none``)."""
        return FrameWindow()

    def attend_past(
        self, image: ImageFeatures, window: FrameWindow
    ) -> tuple[ImageFeatures, FrameWindow]:
        """Frame t's features (one row per video) with the temporal path applied, and the
        window for frame t+1 (bounded: W-1 raw embeddings). Identity without it."""
        if self.temporal is None:
            return image, window
        if image.patches is None:
            raise ValueError("the motion window needs the patch level: encode_image keeps it")
        current = (image.embedding, image.patches, image.pixels)
        fused, motion, window = self.temporal.step(current, window)
        return ImageFeatures(
            fused, image.intermediates, image.patches, image.pixels, motion
        ), window

    def motion_terms(
        self, image: ImageFeatures, text: TextFeatures
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``temporal: flow``: the text-conditioned motion terms of a frame (dense-prompt term
        B×C×h×w, mask-logit bias B×1×h×w); None for the other paths."""
        if image.motion is None or self.temporal is None or self.temporal.grounding is None:
            return None
        if text.encoder_words is None:
            raise ValueError("temporal: flow needs the text encoder's words: use project_text")
        return self.temporal.grounding(image.motion, text.encoder_words, text.mask)

    def dense_prompt(
        self,
        image: ImageFeatures,
        text: TextFeatures,
        motion: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Dense prompt embedding B×C×h×w: SAM's no-mask embedding plus the dense path
        (plus the motion term of :meth:`motion_terms`)."""
        batch = text.words.shape[0]
        channels, height, width = image.embedding.shape[1:]
        base = self.prompt_encoder.no_mask_embed.weight.view(1, channels, 1, 1)
        if self.dense_path == "none":
            extra = torch.zeros(batch, channels, 1, 1, device=base.device, dtype=base.dtype)
        elif self.dense_path == "sentence":
            extra = text.sentence.view(batch, channels, 1, 1)
        else:
            tokens = torch.cat([text.words, text.sentence.unsqueeze(1)], dim=1)
            real = torch.ones_like(text.mask[:, :1])
            mask = torch.cat([text.mask, real], dim=1)
            if self.dense_path == "dense_attention":
                extra = self.dense(image.embedding, tokens, mask)
            else:
                extra = self.dense(image.embedding, image.intermediates, tokens, mask)
        if motion is not None:
            extra = extra + motion[0]
        return (base + extra).expand(batch, channels, height, width)

    def decode(
        self, image: ImageFeatures, text: TextFeatures, state: TrackState
    ) -> tuple[torch.Tensor, torch.Tensor, TrackState]:
        """One frame for B expressions → (logits B×1×S×S, iou_scores B×1, next state).

        ``image`` has batch B (one frame per sample) or 1 (one frame, B expressions).
        SAM's decoder has no attention mask, so it runs on each sample's real tokens only,
        batched over the samples of equal token count. With per-sample frames the frame's
        embedding is folded into the dense prompt (SAM adds them first thing anyway) and the
        decoder gets a zero image, so one call serves samples of different frames.
        """
        batch = text.words.shape[0]
        if image.batch_size not in (1, batch):
            raise ValueError(f"image batch {image.batch_size} does not match text batch {batch}")
        motion = self.motion_terms(image, text)
        dense = self.dense_prompt(image, text, motion)
        image_pe = self.prompt_encoder.get_dense_pe()
        shared = image.batch_size == 1
        decoder_image = image.embedding if shared else torch.zeros_like(image.embedding[:1])
        lengths = text.lengths
        by_length: dict[int, list[int]] = defaultdict(list)
        for row, length in enumerate(lengths):
            by_length[length].append(row)
        order, masks, ious, tokens = [], [], [], []
        for length, rows in by_length.items():
            index = torch.tensor(rows, device=dense.device)
            sparse = text.words[index, :length]
            if state.track_token is not None:
                sparse = torch.cat([sparse, state.track_token[index].unsqueeze(1)], dim=1)
            prompt = dense[index] if shared else image.embedding[index] + dense[index]
            m, iou, out = self.mask_decoder.decode(decoder_image, image_pe, sparse, prompt)
            order += rows
            masks.append(m)
            ious.append(iou)
            tokens.append(out[:, 1])
        inverse = torch.argsort(torch.tensor(order, device=dense.device))
        low_res = torch.cat(masks)[inverse]
        if motion is not None:
            low_res = low_res + F.interpolate(
                motion[1], size=low_res.shape[-2:], mode="bilinear", align_corners=False
            )
        logits = upscale_logits(low_res, self.img_size)
        iou_scores = torch.cat(ious)[inverse]
        next_state = state
        if self.tracking is not None:
            object_token = torch.cat(tokens)[inverse]
            next_state = TrackState(self.tracking(state.track_token, object_token))
        return logits, iou_scores, next_state

    def forward_clip(
        self,
        frames: torch.Tensor,
        texts: list[str] | TextFeatures,
        input_sizes: torch.Tensor | None = None,
        clip_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Clips G×T×3×S×S (+ ``input_sizes`` G×2 when zero-padded) and B texts (strings, or
        the text encoder's :class:`TextFeatures` of them) → logits B×T×S×S. ``clip_index`` (B, int) names each text's clip, so expressions of one video
        share its encoder passes; None: one clip per text (G = B). Frames are decoded in
        order; the track state is carried, not detached. A frame equal to the one before it
        in its clip (a RefCOCO image repeated as a pseudo-clip) reuses that frame's encoder
        pass (``share_repeated_frames``, on by default): the same outputs and gradients,
        up to float rounding, for one image-encoder pass instead of T."""
        clips, steps = frames.shape[:2]
        batch = texts.mask.shape[0] if isinstance(texts, TextFeatures) else len(texts)
        if clip_index is None:
            if clips != batch:
                raise ValueError(f"{clips} clips for {batch} texts need a clip_index")
            clip_index = torch.arange(batch)
        elif (
            clip_index.shape != (batch,)
            or int(clip_index.min()) < 0
            or int(clip_index.max()) >= clips
        ):
            raise ValueError(f"clip_index must be {batch} indices below {clips}")
        if steps == 1 and self.tracking is not None and self.training and not self._warned_single:
            log.warning(
                "training one-frame clips with tracking on: the tracking module (all but its "
                "initial token) gets no gradient; `refsam train` freezes it for such stages"
            )
            self._warned_single = True
        text = (
            self.project_text(texts) if isinstance(texts, TextFeatures) else self.encode_text(texts)
        )
        sizes = None if input_sizes is None else input_sizes.repeat_interleave(steps, dim=0)
        flat = frames.flatten(0, 1)
        if self.share_repeated_frames and steps > 1:
            keep, source = repeated_frames(frames)
            image = self.encode_image(flat[keep], None if sizes is None else sizes[keep])
        else:
            source = torch.arange(clips * steps, device=frames.device)
            image = self.encode_image(flat, sizes)
        source = source.to(image.embedding.device)
        state = self.init_track_state(batch)
        clip_index = clip_index.to(image.embedding.device)
        first_rows = clip_index * steps
        clip_starts = torch.arange(clips, device=first_rows.device) * steps
        window = self.init_frame_window()
        outputs = []
        for step in range(steps):
            if self.temporal is None:  # today's RefSAM, bit for bit
                frame = image.index(source.index_select(0, first_rows + step))
            else:  # each clip's frame once through the window, then per expression
                frame, window = self.attend_past(
                    image.index(source.index_select(0, clip_starts + step)), window
                )
                frame = frame.index(clip_index)
            logits, _, state = self.decode(frame, text, state)
            outputs.append(logits[:, 0])
        return torch.stack(outputs, dim=1)

    def forward(
        self,
        frames: torch.Tensor,
        texts: list[str],
        input_sizes: torch.Tensor | None = None,
        clip_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same as :meth:`forward_clip` (so DDP wraps the whole clip step)."""
        return self.forward_clip(frames, texts, input_sizes, clip_index)


def text_encoder_id(model: RefSAM) -> str:
    """The text-encoder id a checkpoint records (``build_refsam(text_encoder=…)`` accepts it)."""
    if model.text_encoder is None:
        raise ConfigError("this model was built without a text encoder")
    return model.text_encoder.identifier
