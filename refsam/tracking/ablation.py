"""Seed-averaged ablation tables (``refsam runs ablation``, ``make ablation``).

The training runs of one experiment (rows of :func:`refsam.tracking.compare.compare_runs`)
are grouped by their build switches (variant, dense path, track token, adapters,
temporal path); each group's J&F per eval set, and per expression subset where the split
has subsets (``J&F/appearance``, ``J&F/motion``), is summarised over its seeds as mean,
sample standard deviation and range. Only finished runs count; a seed run twice in one
group counts once (its newest run).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

SWITCHES = ("variant", "dense_path", "tracking", "adapters", "temporal")


@dataclass(frozen=True)
class Spread:
    """One metric over a group's seeds."""

    mean: float
    sd: float  # sample standard deviation (0 for one seed)
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), sd, min(values), max(values), len(values))

    def text(self) -> str:
        if self.n == 1:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.sd:.3f} [{self.low:.3f}–{self.high:.3f}]"


@dataclass(frozen=True)
class AblationGroup:
    """The runs of one switch setting: its seeds and the spread of every metric."""

    switches: dict[str, str]
    seeds: list[str]
    metrics: dict[str, Spread]  # "<dataset>/<split> J&F[/<subset>]" → spread

    @property
    def label(self) -> str:
        s = self.switches
        track = "track" if s.get("tracking") in ("True", "true") else "no track"
        return f"{s.get('dense_path')}, {track}, temporal {s.get('temporal')}"


def _metric_order(name: str) -> tuple[str, int, str]:
    dataset_split, metric = name.split(" ", 1)
    return dataset_split, metric.count("/"), metric


def group_runs(rows: list[dict[str, Any]]) -> list[AblationGroup]:
    """Finished runs grouped by :data:`SWITCHES` (oldest group first), J&F per set/subset."""
    by_switches: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for row in reversed(rows):  # compare_runs lists newest first; a newer run replaces an older
        if row.get("status") != "FINISHED":
            continue
        key = tuple(str(row.get(name, "-")) for name in SWITCHES)
        by_switches.setdefault(key, {})[str(row.get("seed", "-"))] = row
    groups = []
    for key, runs in by_switches.items():
        values: dict[str, list[float]] = {}
        for row in runs.values():
            for eval_set, metrics in row["eval"].items():
                for metric, value in metrics.items():
                    if metric == "J&F" or metric.startswith("J&F/"):
                        values.setdefault(f"{eval_set} {metric}", []).append(float(value))
        groups.append(
            AblationGroup(
                switches=dict(zip(SWITCHES, key, strict=True)),
                seeds=sorted(runs, key=lambda s: (len(s), s)),
                metrics={
                    name: Spread.of(v)
                    for name, v in sorted(values.items(), key=lambda kv: _metric_order(kv[0]))
                },
            )
        )
    return groups


def format_ablation(groups: list[AblationGroup], *, markdown: bool = False) -> str:
    """One column per group, one row per metric: ``mean ± sd [min–max]`` over the seeds."""
    names = sorted({m for g in groups for m in g.metrics}, key=_metric_order)
    header = ["metric", *(g.label for g in groups)]
    body = [["seeds", *(",".join(g.seeds) for g in groups)]]
    body += [[name, *(g.metrics[name].text() if name in g.metrics else "-" for g in groups)]
             for name in names]  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    )
