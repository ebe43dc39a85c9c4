"""Fixtures for the model tests: the MiniLM text encoder is loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refsam.modeling import RefSAM, TextEncoder, build_refsam  # noqa: E402

TEXTS = ["the red circle on the left", "a cat", "the small green triangle moving to the right"]


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """The packaged MiniLM (frozen), shared by every model built in the tests."""
    return TextEncoder()


@pytest.fixture
def build_tiny(text_encoder: TextEncoder) -> Callable[..., RefSAM]:
    """``build_tiny(seed=0, **kwargs)``: a tiny RefSAM on the shared encoder, seeded."""

    def build(seed: int = 0, **kwargs) -> RefSAM:
        torch.manual_seed(seed)
        return build_refsam("tiny", text_encoder=text_encoder, **kwargs)

    return build


def _random_frames(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.fixture
def random_frames() -> Callable[..., torch.Tensor]:
    """``random_frames(*shape, seed=0)``: uint8 frames of ``shape`` (…×3×H×W)."""
    return _random_frames
