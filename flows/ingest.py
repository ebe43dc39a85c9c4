"""Prefect 3 flow: ingest one dataset split into shards, one task per shard range.

Thin on purpose: planning, shard writing and index/manifest writing are the library
functions of :mod:`refsam.data.shards` (``refsam ingest`` runs the same code without
Prefect). Shard tasks retry on transient I/O errors and are cached by a key made of the
shard's plan key (input fingerprint, code version, shard size, its videos); a cache hit is
only trusted while the shard and its state record still exist and match their checksum.
Shard tasks run on threads unless a Dask scheduler address is given
(:func:`flows.common.ingest_task_runner`; prefect-dask is imported only then).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import ingest_task_runner, retry_on_io
from refsam.data.lock import output_lock
from refsam.data.shards import (
    DEFAULT_SHARD_SIZE,
    IngestPlan,
    ShardResult,
    completed_shard,
    finalize,
    plan_ingest,
    remove_temporaries,
    write_shard,
)

IO_RETRIES = 2


@lru_cache(maxsize=4)
def _plan(
    dataset: str, split: str, raw: str, out: str, shard_size: int, run_token: str
) -> IngestPlan:
    """One plan per flow run (``run_token``), shared by that run's tasks (threads)."""
    return plan_ingest(dataset, split, Path(raw), Path(out), shard_size=shard_size)


def _shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The shard's plan key: input fingerprint + code version + shard size + its videos."""
    plan = _plan(*parameters["plan_args"])
    return f"ingest-shard-{plan.shards[parameters['index']].plan_key}"


_retry_on_io = retry_on_io  # transient I/O only: not a missing or forbidden path


@task(name="plan-shards")
def plan_shards(plan_args: tuple) -> list[dict[str, Any]]:
    plan = _plan(*plan_args)
    return [{"index": s.index, "name": s.name, "videos": len(s.videos)} for s in plan.shards]


@task(
    name="write-shard",
    retries=IO_RETRIES,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_on_io,
    cache_key_fn=_shard_cache_key,
    persist_result=True,
)
def write_shard_task(plan_args: tuple, index: int) -> dict[str, Any]:
    plan = _plan(*plan_args)
    return asdict(write_shard(plan, plan.shards[index]))


@task(name="write-index-and-manifest")
def finalize_task(plan_args: tuple, results: list[dict[str, Any]]) -> dict[str, Any]:
    plan = _plan(*plan_args)
    return finalize(plan, [ShardResult(**r) for r in results]).to_dict()


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=2))
def ingest_flow(
    dataset: str,
    split: str,
    raw_root: str,
    out_root: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Plan shard ranges, write them in parallel tasks, then write index + manifest."""
    logger = get_run_logger()
    plan_args = (dataset, split, str(raw_root), str(out_root), shard_size, uuid.uuid4().hex)
    plan = _plan(*plan_args)  # fatal input errors surface here, before anything is written
    shards = plan_shards(plan_args)
    with output_lock(plan.out_dir):
        remove_temporaries(plan.out_dir)
        futures = []
        for shard in shards:
            # a cached result is trusted only while its outputs exist and match their checksum
            intact = completed_shard(plan, plan.shards[shard["index"]]) is not None
            runner = write_shard_task.with_options(refresh_cache=not intact)
            futures.append(runner.submit(plan_args, shard["index"]))
        results = [f.result() for f in futures]
        cached = 0
        for future, result in zip(futures, results, strict=True):
            if future.state.name == "Cached":
                result["skipped"], cached = True, cached + 1
        summary = finalize_task(plan_args, results)
    summary["shards_cached"] = cached
    logger.info(
        "%s/%s: %d videos, %d expressions, %d frames in %d shards (%d cached), %d quarantined",
        dataset,
        split,
        summary["videos"],
        summary["expressions"],
        summary["frames"],
        summary["shards"],
        cached,
        summary["quarantined"],
    )
    return summary


def run_ingest_flow(
    dataset: str,
    split: str,
    raw_root: Path,
    out_root: Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 2,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run :func:`ingest_flow` with ``workers`` parallel shard tasks (threads), or on the
    Dask cluster at ``dask_address`` when one is given."""
    runner = ingest_task_runner(workers, dask_address)
    return ingest_flow.with_options(task_runner=runner)(
        dataset, split, str(raw_root), str(out_root), shard_size
    )
