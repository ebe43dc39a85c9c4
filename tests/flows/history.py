"""One retrain history on the tiny demo data (configs/smoke.yaml), shared by the flow tests
and the MLflow UI browser test (built once per session by tests/flows/conftest.py).

The retrain flow runs three times into one registry. Masks are thresholded at the extremes
so the scores depend on the data, not on four training steps: at 0.9999 nothing is
predicted (J&F = the share of object-frames where the object is absent), at 0.0001 every
pixel whose object probability beats the 0.1 background is.
1. ingest through a local Dask cluster (prefect-dask), train (with a J&F-vs-step curve),
   evaluate both eval sets (threshold 0.9999) → the first champion;
2. the same again through `refsam pipeline --no-ingest` (selection set only) → a tie:
   the champion is kept;
3. threshold 0.0001 on re-ingested eval data (shard size 1 → another manifest hash) →
   the champion is first re-scored on the new data, then the worse candidate loses.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from refsam.cli import main
from refsam.config import TrackingConfig

CONFIG = "configs/smoke.yaml"


@dataclass
class History:
    work: Path
    tracking: TrackingConfig
    runs: list  # RetrainOutcome of runs 1 and 3, the printed summary of run 2 (CLI)

    def client(self):  # noqa: ANN201
        from refsam.tracking import get_client

        return get_client(self.tracking)


def smoke_overrides(demo_root: Path, work: Path, shards: str = "shards", *extra: str) -> list[str]:
    return [
        f"data.raw_root={demo_root / 'raw'}",
        f"data.shards_root={work / shards}",
        f"data.heldout_root={demo_root / 'heldout'}",
        f"train.output_dir={work / 'outputs'}",
        f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        *extra,
    ]


def build_history(demo_root: Path, work: Path) -> History:
    """Runs the three retrains above into ``work`` (needs a Prefect server, e.g. the harness)."""
    from distributed import LocalCluster

    from flows.retrain import retrain_flow

    tracking = TrackingConfig(uri=f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    runs = []
    empty = ["eval.mask_threshold=0.9999"]
    davis_only = ["eval.sets=[{dataset: ref-davis17, split: valid}]"]
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster:
        curve = ["eval.curve_every=2", "eval.curve_videos=1"]  # the J&F-vs-step plot's curve
        first = smoke_overrides(demo_root, work, "shards", *empty, *curve)
        runs.append(retrain_flow(CONFIG, first, dask_address=cluster.scheduler_address))
    second = ["pipeline", "--config", CONFIG, "--no-ingest"]  # the CLI; shards of run 1
    for override in smoke_overrides(demo_root, work, "shards", *empty, *davis_only):
        second += ["--set", override]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(second) == 0
    runs.append(printed.getvalue())
    full = ["data.shard_size=1", "eval.mask_threshold=0.0001", *davis_only]
    runs.append(retrain_flow(CONFIG, smoke_overrides(demo_root, work, "shards-b", *full)))
    return History(work, tracking, runs)
