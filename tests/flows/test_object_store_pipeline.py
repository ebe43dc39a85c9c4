"""The retrain pipeline with every data root in a bucket (a real S3-compatible server on
loopback): raw data, shards and held-out ground truth all ``s3://`` URLs. Ingest writes the
bucket, training streams the shards from it, evaluation reads shards and ground truth
from it, and the scores equal a run with the same data on local disk."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from refsam.cli import main
from refsam.config import TrackingConfig
from tests.flows.history import CONFIG

pytestmark = pytest.mark.slow

RAW = ("coco", "ref-youtube-vos", "ref-davis")


def _pipeline(roots: dict[str, str], work: Path) -> list:
    args = ["pipeline", "--config", CONFIG]
    overrides = [
        *(f"data.{name}={value}" for name, value in roots.items()),
        f"train.output_dir={work / 'outputs'}",
        f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        "eval.sets=[{dataset: ref-davis17, split: valid}]",
        "eval.mask_threshold=0.0001",
    ]
    for override in overrides:
        args += ["--set", override]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(args) == 0, printed.getvalue()[-3000:]
    from refsam.tracking import get_client

    client = get_client(TrackingConfig(uri=f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"))
    experiment = client.get_experiment_by_name("refsam-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`refsam.kind` = 'train'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return runs


def test_pipeline_with_raw_shards_and_heldout_in_a_bucket(
    prefect_harness: Path, s3, demo_root: Path, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for folder in [demo_root / "raw" / name for name in RAW] + [demo_root / "heldout"]:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"data/{path.relative_to(demo_root)}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    remote = _pipeline(
        {
            "raw_root": f"s3://{bucket}/data/raw",
            "shards_root": f"s3://{bucket}/shards",
            "heldout_root": f"s3://{bucket}/data/heldout",
        },
        tmp_path / "remote",
    )
    local = _pipeline(
        {
            "raw_root": str(demo_root / "raw"),
            "shards_root": str(tmp_path / "local" / "shards"),
            "heldout_root": str(demo_root / "heldout"),
        },
        tmp_path / "local",
    )
    keys = {
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="shards/"
        )
        for item in page.get("Contents", [])
    }
    for split in ("refcoco/train", "ref-youtube-vos/train", "ref-davis17/valid"):
        assert f"shards/{split}/manifest.json" in keys and f"shards/{split}/index.parquet" in keys
        assert f"shards/{split}/shard-000000.tar" in keys
    ours, theirs = remote[0].data, local[0].data
    assert ours.params["data.shards_root"] == f"s3://{bucket}/shards"
    scores = {k: v for k, v in ours.metrics.items() if "J&F" in k or k.startswith("train/loss")}
    assert scores and scores == {k: theirs.metrics[k] for k in scores}
