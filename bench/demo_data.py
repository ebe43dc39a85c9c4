"""Demo-data generation: seconds for the "small" demo with 1 and 2 rendering processes.

Goal: 2 workers ÷ 1 worker ≥ 1.4 with byte-identical files. Planning (~5 s, overlapped only
with the workers' start-up), the metadata files and the summary stay serial, about a fifth
of a 1-worker run, which caps the ratio near 1.6 on 2 free cores. Runs are interleaved
(1, 2, 1, 2, …); --quick does one pair, --full three. The load average is recorded: a busy
machine lowers the ratio.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result  # noqa: E402

from refsam.data.demo import generate_demo  # noqa: E402

SCALE = "small"


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_once(workers: int) -> tuple[float, str, int]:
    """(seconds, tree digest, bytes) of one generation into a fresh temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="refsam-bench-demo-"))
    try:
        start = time.perf_counter()
        summary = generate_demo(out, seed=0, scale=SCALE, workers=workers)
        seconds = time.perf_counter() - start
        return seconds, tree_digest(out), summary["total_bytes"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    repeats = 3 if args.full else 1
    times: dict[int, list[float]] = {1: [], 2: []}
    digests: set[str] = set()
    size = 0
    for _ in range(repeats):
        for workers in times:
            seconds, digest, size = run_once(workers)
            times[workers].append(seconds)
            digests.add(digest)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    identical = len(digests) == 1
    write_result(
        "demo_data",
        params={"scale": SCALE, "seed": 0, "repeats": repeats, "bytes": size},
        figures={
            "seconds_1_worker": one,
            "seconds_2_workers": two,
            "all_runs_s": {str(k): v for k, v in times.items()},
            "byte_identical": identical,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        ratios={"two_workers_over_one": one / two},
        goal="2 workers / 1 worker >= 1.4 with byte-identical files",
        meets_goal=identical and one / two >= 1.4,
    )


if __name__ == "__main__":
    main()
