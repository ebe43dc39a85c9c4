"""Session fixtures of the flow tests: one ephemeral Prefect server (PREFECT_HOME in a tmp dir)
and one retrain history on the tiny demo data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.history import History, build_history


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from flows.common import prepare_prefect

    prepare_prefect()  # as `refsam pipeline` does
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def history(
    prefect_harness: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> History:
    """Three retrain runs into one tmp store, built once per session (tests/flows/history.py):
    read by test_retrain_flow.py and by the MLflow UI browser test."""
    return build_history(demo_root, tmp_path_factory.mktemp("retrain"))
