"""Shared pytest fixtures (session-scoped fixtures are built once per test run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from refsam.data.demo import generate_demo


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo data (seed 0), generated once per session: ``<root>/raw/…``, ``<root>/heldout/…``."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, seed=0, scale="tiny")
    return root
