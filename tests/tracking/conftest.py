"""One real MLflow sqlite store per test module, in a tmp project root."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient


@dataclass
class Store:
    root: Path  # the project root ($REFSAM_HOME)
    uri: str  # sqlite:///<root>/mlruns/mlflow.db


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite database with its schema created (the migrations take ~10 s)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, empty_db: Path) -> Iterator[Store]:
    """A fresh project root whose default MLflow store is ``<root>/mlruns/mlflow.db``."""
    root = tmp_path_factory.mktemp("project")
    (root / "mlruns").mkdir()
    shutil.copyfile(empty_db, root / "mlruns/mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("REFSAM_HOME", str(root))
        yield Store(root=root.resolve(), uri=f"sqlite:///{root.resolve()}/mlruns/mlflow.db")
