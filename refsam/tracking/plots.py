"""The J&F-vs-step plot of a training run (PNG artifact ``plots/jf_vs_step.png``): the
validation curve (``val/*``) and the full evaluations (``eval/*``), logged at the end of
``refsam train``, the train flow and the retrain flow.

Drawn with matplotlib's object API (no pyplot, no global backend change) when it is
installed, else with PIL (a plain line chart with axes and a legend).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from refsam.tracking.runs import EVAL_PREFIX, MlflowRunLogger

CURVE_PREFIX = "val"  # refsam.train.curve's metrics (tracking does not import train)

Series = dict[str, list[tuple[int, float]]]
PLOT_ARTIFACT = "plots/jf_vs_step.png"
_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _draw_matplotlib(series: Series, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, points in series.items():
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="o", label=name)
    axes.set(xlabel="step", ylabel="J&F", title=title, ylim=(0, 1))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path)


def _draw_pil(series: Series, path: Path, title: str) -> None:
    width, height, margin = 640, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = [s for points in series.values() for s, _ in points]
    low, high = min(steps), max(max(steps), min(steps) + 1)

    def xy(step: int, value: float) -> tuple[float, float]:
        x = margin + (step - low) / (high - low) * (width - 2 * margin)
        return x, height - margin - max(0.0, min(1.0, value)) * (height - 2 * margin)

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    draw.text((margin, 15), title, fill="black")
    draw.text((margin, height - margin + 8), f"step {low}", fill="black")
    draw.text((width - margin - 60, height - margin + 8), f"step {high}", fill="black")
    draw.text((8, margin - 6), "1.0", fill="black")
    draw.text((8, height - margin - 6), "0.0", fill="black")
    for index, (name, points) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = [xy(s, v) for s, v in points]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for x, y in coords:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - margin - 200, margin + 8 + 14 * index), name, fill=colour)
    image.save(path)


def plot_series(series: Series, path: Path, *, title: str = "J&F vs step") -> Path:
    """Draw ``{name: [(step, value), ...]}`` as a line chart PNG at ``path``."""
    if not series or not any(series.values()):
        raise ValueError("nothing to plot: every series is empty")
    series = {k: sorted(v) for k, v in series.items() if v}
    try:
        _draw_matplotlib(series, path, title)
    except ImportError:
        _draw_pil(series, path, title)
    return path


def _series_name(key: str) -> str:
    if key.startswith(f"{CURVE_PREFIX}/"):
        return key.removeprefix(f"{CURVE_PREFIX}/").rsplit("/", 1)[0] + " (curve videos)"
    return key.removeprefix(f"{EVAL_PREFIX}/").rsplit("/", 1)[0] + " (all videos)"


def log_jf_plot(logger: MlflowRunLogger, *, suffix: str = "J_and_F") -> Path | None:
    """Plot every ``eval/*/<suffix>`` metric (full evaluations) and ``val/*/<suffix>``
    metric (the validation curve, ``eval.curve_every``) of the run against step and log
    the PNG as ``plots/jf_vs_step.png`` (replacing an earlier one). Returns the
    artifact's local copy, or None without data."""
    run = logger.client.get_run(logger.run_id or "")
    keys = sorted(
        k
        for k in run.data.metrics
        if k.startswith((f"{EVAL_PREFIX}/", f"{CURVE_PREFIX}/")) and k.endswith(f"/{suffix}")
    )
    series = {_series_name(k): logger.metric_history(k) for k in keys}
    if not any(series.values()):
        return None
    out = Path(tempfile.mkdtemp(prefix="refsam-plot-")) / Path(PLOT_ARTIFACT).name
    plot_series(series, out, title=f"J&F vs step — {run.info.run_name}")
    logger.log_artifact(out, str(Path(PLOT_ARTIFACT).parent))
    return out
