"""Prefect 3 flow: ingest one dataset split into shards, one task per shard range.

Thin on purpose: planning, shard writing and index/manifest writing are the library
functions of :mod:`refsam.data.shards` (``refsam ingest`` runs the same code without
Prefect). Shards are cached by their plan key (input fingerprint, code version, shard size,
its videos): a shard whose tar and state record exist with that key and a matching sha256
is reused without a task, whoever wrote it (this flow or ``refsam ingest``); the others
are written by shard tasks that retry on transient I/O errors. Shard tasks run on threads
unless a Dask scheduler address is given (:func:`flows.common.ingest_task_runner`;
prefect-dask is imported only then).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

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
from refsam.storage import as_path

IO_RETRIES = 2


@lru_cache(maxsize=4)
def _plan(
    dataset: str, split: str, raw: str, out: str, shard_size: int, run_token: str
) -> IngestPlan:
    """One plan per flow run (``run_token``), shared by that run's tasks (threads)."""
    return plan_ingest(dataset, split, as_path(raw), as_path(out), shard_size=shard_size)


_retry_on_io = retry_on_io  # transient I/O only: not a missing or forbidden path


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards(plan_args: tuple) -> list[dict[str, Any]]:
    plan = _plan(*plan_args)
    return [{"index": s.index, "name": s.name, "videos": len(s.videos)} for s in plan.shards]


@task(
    name="write-shard",
    retries=IO_RETRIES,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_on_io,
    cache_policy=NO_CACHE,  # complete shards never reach a task (see ingest_flow)
)
def write_shard_task(plan_args: tuple, index: int) -> dict[str, Any]:
    plan = _plan(*plan_args)
    return asdict(write_shard(plan, plan.shards[index]))


@task(name="write-index-and-manifest", cache_policy=NO_CACHE)
def finalize_task(plan_args: tuple, results: list[ShardResult]) -> dict[str, Any]:
    plan = _plan(*plan_args)
    return finalize(plan, results).to_dict()


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
        by_index: dict[int, ShardResult] = {}
        futures = {}
        for shard in shards:
            index = shard["index"]
            # the cache: a complete shard (plan key and sha256 match) is reused as it is
            done = completed_shard(plan, plan.shards[index])
            if done is not None:
                by_index[index] = done
            else:
                futures[index] = write_shard_task.submit(plan_args, index)
        cached = len(by_index)
        by_index.update({i: ShardResult(**future.result()) for i, future in futures.items()})
        # quote: Prefect would otherwise walk every index row of every shard (seconds)
        results = quote([by_index[s["index"]] for s in shards])
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
