"""Shared helpers for benchmarks (BENCHMARKS.md conventions)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(
    description: str,
    flags: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> argparse.Namespace:
    """``--quick`` (default) / ``--full``, plus a benchmark's own on/off ``flags`` and
    valued ``options`` (``--name VALUE``, default None)."""
    parser = argparse.ArgumentParser(description=description)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True, help="small sizes (default)")
    size.add_argument("--full", action="store_true", help="bigger sizes")
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    for option, text in (options or {}).items():
        parser.add_argument(option, default=None, help=text)
    return parser.parse_args()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["device"] = "cpu"
    return info


def median_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(
    name: str,
    *,
    params: dict[str, Any],
    figures: dict[str, Any],
    ratios: dict[str, float],
    goal: str,
    meets_goal: bool,
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "git_commit": git_commit(),
        "machine": machine(),
        "params": params,
        "figures": figures,
        "ratios": ratios,
        "goal": goal,
        "meets_goal": bool(meets_goal),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    summary = ", ".join(f"{k}={v:.3g}" for k, v in ratios.items())
    print(f"{name}: {summary} goal: {goal} meets_goal={meets_goal} -> {path}")
    return path
