"""The run-logger protocol training and evaluation report to (INTERFACES.md).

``refsam.tracking.MlflowRunLogger`` implements it for MLflow; :class:`NullRunLogger` drops
everything (no tracking) and :class:`MemoryRunLogger` keeps it in memory (tests, dry runs).
Only rank 0 of a distributed run logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RunLogger(Protocol):
    """Where a run's params, metrics and artifacts go; ``run_id`` is stored in checkpoints."""

    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


class NullRunLogger:
    """A logger that records nothing."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None


class MemoryRunLogger:
    """Keeps everything logged in lists (for tests and inspection)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[tuple[Path, str | None]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((Path(path), artifact_path))
