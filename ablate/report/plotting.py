"""What every figure of the report shares: log axes with readable ticks, means with their 95% intervals
(clipped intervals marked on a log axis), titles and legends laid out outside the data.

Figures use matplotlib's object API with constrained layout (no pyplot state, no backend switch), so
every label is laid out inside the canvas.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ablate.report.data import ReportData
from ablate.stats import Summary

WIDE_RANGE = 100.0  # max/min ratio from which a positive metric is drawn on a log axis
FLOOR_RANGE = 10.0  # arms this many times the real-data floor: a log axis, or the floor would lie on the x-axis
MARKERS = "os^D<>ph*X"  # one per line of a figure, cycling with the colours C0..C9


def log_scale(ax: Axes, axis: str, lo: float, hi: float) -> None:
    """A log axis whose ticks carry readable values: 1-2-5 labels when it spans few decades."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    if lo > 0 and hi / lo < 1e3:
        target = ax.yaxis if axis == "y" else ax.xaxis
        target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(NullFormatter())


def wants_log(values: list[float], floor: Sequence[float] = ()) -> bool:
    """Positive values spanning WIDE_RANGE, or reaching FLOOR_RANGE times a positive real-data floor."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) >= WIDE_RANGE or any(f > 0 and max(finite) / f >= FLOOR_RANGE for f in floor)


def errorbars(ax: Axes, xs: list[float], stats: list[Summary], log: bool, **style) -> bool:
    """Mean with its 95% interval (asymmetric for a non-negative metric's); on a log axis a CI reaching 0 or below is drawn to the axis floor and marked
    with a downward triangle (its true lower end is off the axis). Returns whether any was clipped."""
    means = [s.mean for s in stats]
    ok = [s.n > 1 and math.isfinite(s.low) and math.isfinite(s.high) for s in stats]
    low = [s.low if good else s.mean for s, good in zip(stats, ok, strict=True)]
    above = [s.high - s.mean if good else 0.0 for s, good in zip(stats, ok, strict=True)]
    clipped = [log and lo <= 0 for lo in low]
    if any(clipped):
        floor = 0.5 * min([v for v in low + means if v > 0])
        low = [floor if c else lo for lo, c in zip(low, clipped, strict=True)]
        ax.plot([x for x, c in zip(xs, clipped, strict=True) if c], [floor] * sum(clipped), "v",
                color=style.get("color", "black"), markersize=7)
    # a non-negative key's interval is clipped at 0, so an unbiased estimate below 0 (KID) lies under its interval
    ax.errorbar(xs, means, yerr=np.clip([np.subtract(means, low), above], 0, None), capsize=3, **style)
    return any(clipped)


def finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str, clipped: bool = False) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if clipped:
        handles.append(Line2D([], [], marker="v", linestyle="", color="black"))
        labels.append("CI reaches ≤ 0 (off the log axis)")
    if handles:  # outside the axes, so it hides no data; only the clipping note: below, to keep the plot wide
        fig.legend(handles, labels, loc="outside right upper" if len(handles) > clipped else "outside lower center",
                   fontsize=8)


def by_x(point: tuple) -> float:
    """Points sort by their x alone (NFE, an axis value): two samplers at one NFE keep their order, and
    the statistics after x, which do not compare, are never reached."""
    return point[0]


def value_range(values: list[float]) -> tuple[float, float]:
    positive = [v for v in values if math.isfinite(v) and v > 0]
    return (min(positive), max(positive)) if positive else (1.0, 10.0)


def words(data: ReportData, key: str, metric: str = "") -> str:
    """A key as a reader says it: what its metric declares it to be (e.g. "mean x0 error over timesteps"),
    else the metric and key; wrapped to fit beside a plot."""
    return textwrap.fill(data.spec(key)["description"] or " ".join(p for p in (metric, key) if p), 42)
