"""What a training run returns (INTERFACES.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refsam.modeling import RefSAM


@dataclass
class StageResult:
    name: str
    steps: int
    clips: int
    final_loss: float
    seconds: float

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrainResult:
    """What :func:`train` did (INTERFACES.md)."""

    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    steps: int
    metrics: dict[str, float]
    stages: list[StageResult]
    wall_s: float
    trainable_params: dict[str, int]
    dry_run: bool = False
    parameter_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    report: str = ""  # a dry run's summary (what `refsam train --dry-run` prints)
    model: RefSAM | None = field(default=None, repr=False)


def trainable_counts(model: RefSAM) -> dict[str, int]:
    return {name: sum(p.numel() for p in ps) for name, ps in model.param_groups().items()}
