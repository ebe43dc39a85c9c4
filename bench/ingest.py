"""Ingest throughput: frames/s with 1 and 2 workers (processes and threads), interleaved.

Goal (issue 4): 2 workers ÷ 1 worker ≥ 1.7 with the faster of processes/threads (measured;
an Amdahl projection from the serial/parallel split of a 1-worker run is reported beside
it, with a pure-CPU control (2 processes ÷ 1 on fixed work) measured in the same run:
a control near 1 means the machine gave this run no second core). Input is
the demo data at scale "small" (generated once into a cache folder); --full ingests every
dataset/split instead of Ref-YouTube-VOS train only.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result  # noqa: E402

from refsam.data.demo import SCALES, generate_demo  # noqa: E402
from refsam.data.shards import finalize, ingest, plan_ingest, write_shard  # noqa: E402
from refsam.data.sources import dataset_names, raw_dir_name, source_class  # noqa: E402

CACHE = Path(os.environ.get("REFSAM_BENCH_CACHE", Path(tempfile.gettempdir()) / "refsam-bench"))
SHARD_SIZE = 8
REPEATS = 3


def demo_small() -> Path:
    """The small demo raw root, generated once and reused while the scale is unchanged."""
    root = CACHE / "demo-small"
    marker, scale = root / ".complete", repr(SCALES["small"])
    if not marker.is_file() or marker.read_text() != scale:
        shutil.rmtree(root, ignore_errors=True)
        generate_demo(root, seed=0, scale="small", workers=2)
        marker.write_text(scale)
    return root / "raw"


def jobs(raw: Path, full: bool) -> list[tuple[str, str, Path]]:
    if not full:
        return [("ref-youtube-vos", "train", raw / "ref-youtube-vos")]
    return [(n, s, raw / raw_dir_name(n)) for n in dataset_names() for s in source_class(n).splits]


def _cpu_seconds() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(
    work: list[tuple[str, str, Path]], workers: int, executor: str
) -> tuple[float, float, int]:
    """(wall seconds, cores used = CPU seconds ÷ wall seconds, frames) of one full ingest."""
    out = CACHE / f"out-{workers}-{executor}"
    shutil.rmtree(out, ignore_errors=True)
    cpu, start = _cpu_seconds(), time.perf_counter()
    frames = sum(
        ingest(
            d, s, r, out, workers=workers, executor=executor, shard_size=SHARD_SIZE, progress=False
        ).frames
        for d, s, r in work
    )
    seconds = time.perf_counter() - start
    cores = (_cpu_seconds() - cpu) / seconds
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cores, frames


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def control_two_over_one(n: int = 4_000_000) -> float:
    """Pure-CPU control in the same run: speed-up of 2 processes over 1 on fixed work.
    About 2 when the machine gives this run two free cores; about 1 when it does not."""
    walls = {}
    for procs in (1, 2):
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            pool.map(_spin, [1000] * procs)  # warm
            start = time.perf_counter()
            pool.map(_spin, [n // procs] * procs)
            walls[procs] = time.perf_counter() - start
    return walls[1] / walls[2]


def serial_and_parallel_seconds(work: list[tuple[str, str, Path]]) -> tuple[float, float]:
    """One-worker run split into its serial part (plan + index/manifest) and its parallel
    part (shard writing), for an Amdahl projection independent of machine load."""
    out = CACHE / "out-parts"
    shutil.rmtree(out, ignore_errors=True)
    serial = parallel = 0.0
    for dataset, split, raw in work:
        start = time.perf_counter()
        plan = plan_ingest(dataset, split, raw, out, shard_size=SHARD_SIZE)
        serial += time.perf_counter() - start
        start = time.perf_counter()
        results = [write_shard(plan, task) for task in plan.shards]
        parallel += time.perf_counter() - start
        start = time.perf_counter()
        finalize(plan, results)
        serial += time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return serial, parallel


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    work = jobs(demo_small(), args.full)
    configs = {
        "1_worker": (1, "process"),
        "2_processes": (2, "process"),
        "2_threads": (2, "thread"),
    }
    for workers, executor in configs.values():  # warm-up (imports, page cache)
        run_once(work, workers, executor)
    controls: list[float] = []
    times: dict[str, list[float]] = {k: [] for k in configs}
    cores: dict[str, list[float]] = {k: [] for k in configs}
    frames = 0
    for _ in range(REPEATS):  # interleaved
        for name, (workers, executor) in configs.items():
            seconds, used, frames = run_once(work, workers, executor)
            times[name].append(seconds)
            cores[name].append(used)
        controls.append(control_two_over_one())
    fps = {f"frames_per_s_{k}": frames / statistics.median(v) for k, v in times.items()}
    parts = [serial_and_parallel_seconds(work) for _ in range(REPEATS)]
    serial = statistics.median(p[0] for p in parts)
    parallel = statistics.median(p[1] for p in parts)
    projected = (serial + parallel) / (serial + parallel / 2)
    best = max(fps["frames_per_s_2_processes"], fps["frames_per_s_2_threads"])
    ratio = best / fps["frames_per_s_1_worker"]
    write_result(
        "ingest",
        params={
            "datasets": [f"{d}/{s}" for d, s, _ in work],
            "frames": frames,
            "shard_size": SHARD_SIZE,
            "repeats": REPEATS,
            "scale": "small",
        },
        figures={
            **fps,
            "seconds_median": {k: statistics.median(v) for k, v in times.items()},
            "cores_used_median": {k: statistics.median(v) for k, v in cores.items()},
            "serial_seconds_1_worker": serial,
            "parallel_seconds_1_worker": parallel,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        ratios={
            "two_workers_over_one": ratio,
            "control_cpu_spin_two_over_one": statistics.median(controls),
            "amdahl_projection_two_free_cores": projected,
        },
        goal="2 workers / 1 worker >= 1.7 (faster of processes/threads)",
        meets_goal=ratio >= 1.7,
    )


if __name__ == "__main__":
    main()
