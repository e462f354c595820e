"""The report's plots layer: one figure builder per plot, each reading only a `ReportData`.

Figures use matplotlib's object API with constrained layout (no pyplot state, no backend switch), so
every label is laid out inside the canvas; the builders return the figure for tests and `draw` saves them.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ablate.report.data import Plot, ReportData, split_axis
from ablate.stats import Summary, mean_ci
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA

DPI = 110
WIDE_RANGE = 100.0  # max/min ratio from which a positive metric is drawn on a log axis
FLOOR_RANGE = 10.0  # arms this many times the real-data floor: a log axis, or the floor would lie on the x-axis


def draw(data: ReportData, folder: Path) -> list[Plot]:
    """Build and save every plot the data supports; returns them in report order."""
    plots = []
    builders = [lambda: metric_figure(data, data.primary) if data.primary else None,
                lambda: axis_figure(data, data.primary) if data.primary else None,
                lambda: headline_curve_figure(data), lambda: x0_error_figure(data), lambda: diagnostic_curve_figure(data),
                lambda: loss_figure(data), lambda: samples_figure(data)]
    for build in builders:
        made = build()
        if made:
            plot, fig = made
            fig.savefig(folder / plot.file, dpi=DPI)
            plots.append(plot)
    return plots


def _log_scale(ax: Axes, axis: str, lo: float, hi: float) -> None:
    """A log axis whose ticks carry readable values: 1-2-5 labels when it spans few decades."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    if lo > 0 and hi / lo < 1e3:
        target = ax.yaxis if axis == "y" else ax.xaxis
        target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(NullFormatter())


def _wants_log(values: list[float], floor: Sequence[float] = ()) -> bool:
    """Positive values spanning WIDE_RANGE, or reaching FLOOR_RANGE times a positive real-data floor."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) >= WIDE_RANGE or any(f > 0 and max(finite) / f >= FLOOR_RANGE for f in floor)


def _errorbars(ax: Axes, xs: list[float], stats: list[Summary], log: bool, **style) -> bool:
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
    ax.errorbar(xs, means, yerr=[np.subtract(means, low), above], capsize=3, **style)
    return any(clipped)


def _finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str, clipped: bool = False) -> None:
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


def metric_figure(data: ReportData, key: str) -> tuple[Plot, Figure] | None:
    """Against NFE when the samplers differ in NFE (one panel per arm, a line per sampler family, with
    several arms); otherwise one point with its CI per arm/sampler."""
    groups = [g for g in data.groups if g[1] != REAL_DATA and data.values(*g, key)]
    if not groups:
        return None
    if len({data.nfe(*g) for g in groups} - {None}) > 1:
        if len(data.arms) > 1 and len(data.samplers) > 3:
            return _families_vs_nfe(data, key, groups)
        return _metric_vs_nfe(data, key, groups)
    return _metric_by_group(data, key, groups)


def _by_x(point: tuple) -> float:
    """Points sort by their x alone (NFE, an axis value): two samplers at one NFE keep their order, and
    the statistics after x, which do not compare, are never reached."""
    return point[0]


def _parse_label(label: str) -> tuple[str, dict[str, str]]:
    """'ddim(steps=10, eta=1.0)' -> ('ddim', {'steps': '10', 'eta': '1.0'}) (defaults are left out of labels)."""
    name, _, rest = label.partition("(")
    params = dict(p.split("=", 1) for p in rest.rstrip(")").split(", ") if "=" in p)
    return name, params


def sampler_families(samplers: list[str]) -> dict[str, str]:
    """sampler label -> family: samplers of one plugin differing in the parameter that takes the most values
    (the cost: DDIM's steps, one_step's jump_at) form one family; the other parameters name it."""
    parsed = {s: _parse_label(s) for s in samplers}
    out = {}
    for name in dict.fromkeys(n for n, _ in parsed.values()):
        members = [s for s, (n, _) in parsed.items() if n == name]
        params = sorted({k for s in members for k in parsed[s][1]})
        counts = {k: len({parsed[s][1].get(k) for s in members}) for k in params}
        axis = max(counts, key=lambda k: counts[k]) if counts else None
        for s in members:
            rest = {k: v for k, v in parsed[s][1].items() if k != axis}
            out[s] = name + (f"({', '.join(f'{k}={v}' for k, v in rest.items())})" if rest else "")
    return out


def _floor(data: ReportData, key: str, arm: str | None = None) -> list[float]:
    """The real-data floor's mean (of one arm's cells, or of all), or [] without one: every metric plot draws it
    and takes it into its axis, so that it never sits unseen on the x-axis."""
    rows = data.floors[data.floors.key == key]
    if arm is not None:
        rows = rows[rows.arm == arm]
    return [float(rows.value.mean())] if len(rows) else []


def _floor_line(ax: Axes, floor: list[float]) -> None:
    """The real-data floor as a dashed line: what real images score on the same metric."""
    for value in floor:
        ax.axhline(value, color="0.3", linestyle="--", linewidth=1, label="real data (held-out)")


def _families_vs_nfe(data: ReportData, key: str, groups: list[tuple[str, str]]) -> tuple[Plot, Figure]:
    families = sampler_families(data.samplers)
    names = list(dict.fromkeys(families[s] for s in data.samplers))
    arms = [a for a in data.arms if any(g[0] == a for g in groups)]
    cols = min(2, len(arms))
    rows = math.ceil(len(arms) / cols)
    fig = Figure(figsize=(6.0 * cols + 1.6, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    clipped = False
    for ax in axes.flat[len(arms):]:
        ax.axis("off")
    for ax, arm in zip(axes.flat, arms, strict=False):
        stats = {g: data.interval(*g, key) for g in groups if g[0] == arm}
        floor = _floor(data, key, arm)
        log = _wants_log([v for st in stats.values() for v in (st.mean, st.high)], floor)
        for i, family in enumerate(names):
            pts = sorted(((data.nfe(*g), st) for g, st in stats.items() if families[g[1]] == family and data.nfe(*g)),
                         key=_by_x)
            if pts:
                clipped |= _errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], log, marker="os^D<>ph*X"[i % 10],
                                      color=f"C{i % 10}", label=family if ax is axes.flat[0] else None)
        _floor_line(ax, floor)
        ax.set_xscale("log")
        if log:
            _log_scale(ax, "y", *_range([v for st in stats.values() for v in (st.low, st.mean, st.high)] + floor))
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("network evaluations per sample (NFE)")
        ax.set_ylabel(f"{key} (mean, 95% interval)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if clipped:
        handles.append(Line2D([], [], marker="v", linestyle="", color="black"))
        labels.append("CI reaches ≤ 0 (off the log axis)")
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{key} against the number of network evaluations, per arm")
    return Plot(f"{key} vs NFE", f"{key}_vs_nfe.png"), fig


def axis_figure(data: ReportData, key: str) -> tuple[Plot, Figure] | None:
    """The metric against a numeric axis of the arms (e.g. `D=8`), one line per value of the rest, with the
    real-data floor per axis value: where the arms cross."""
    parsed = {arm: split_axis(arm) for arm in data.arms}
    if any(axis is None for _, axis in parsed.values()) or len({axis[0] for _, axis in parsed.values()}) != 1:
        return None
    sampler = data.samplers[0] if data.samplers else None
    if sampler is None:
        return None
    name = next(iter(parsed.values()))[1][0]
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats_all = []
    for i, rest in enumerate(dict.fromkeys(r for r, _ in parsed.values())):
        pts = sorted(((axis[1], data.interval(arm, sampler, key)) for arm, (r, axis) in parsed.items()
                      if r == rest and data.values(arm, sampler, key)), key=_by_x)
        if pts:
            stats_all += [p[1] for p in pts]
            _errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], False, marker="o", color=f"C{i % 10}", label=rest)
    floors = sorted((axis[1], data.floors[(data.floors.arm == arm) & (data.floors.key == key)].value.mean())
                    for arm, (_, axis) in parsed.items())
    floors = [f for f in floors if math.isfinite(f[1])]
    if floors:
        ax.plot([f[0] for f in floors], [f[1] for f in floors], "k--", linewidth=1, label="real data (held-out)")
    if not stats_all:
        return None
    span = [abs(v) for st in stats_all for v in (st.mean, st.high) if math.isfinite(v)]
    if span and max(span) > 100 * max(1.0, sorted(span)[len(span) // 2]):  # a few arms blow up: keep the rest readable
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    _finish(fig, ax, name, f"{key} (mean, 95% interval, {sampler})", f"{key} against {name}")
    return Plot(f"{key} vs {name}", f"{key}_vs_{name}.png"), fig


def headline_curve_figure(data: ReportData) -> tuple[Plot, Figure] | None:
    """The headline against training step, per arm (mean and 95% interval over seeds), with the real-data floor
    at the same sample count: does a ranking hold at a larger training budget? One panel per headline key."""
    curve = data.curve
    sampled = curve[curve.sampler != REAL_DATA] if len(curve) else curve
    keys = list(dict.fromkeys(sampled.key)) if len(sampled) else []
    if not keys:
        return None
    fig = Figure(figsize=(6.4 * len(keys) + 1.8, 4.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        rows = sampled[sampled.key == key]
        shown = []
        for i, arm in enumerate(a for a in data.arms if a in set(rows.arm)):
            sub = rows[rows.arm == arm]
            steps = sorted(set(sub.step))
            stats = [data.interval_of(key, sub[sub.step == s].sort_values("seed").value.tolist()) for s in steps]
            _errorbars(ax, steps, stats, False, marker="os^D<>ph*X"[i % 10], color=f"C{i % 10}",
                       label=arm if ax is axes[0] else None)
            shown += [v for st in stats for v in (st.mean, st.low, st.high)]
        floor = curve[(curve.sampler == REAL_DATA) & (curve.key == key)].value
        if len(floor):
            ax.axhline(floor.mean(), color="0.3", linestyle="--", linewidth=1,
                       label="real data (held-out), same count" if ax is axes[0] else None)
            shown.append(floor.mean())
        if _wants_log(shown):
            _log_scale(ax, "y", *_range(shown))
        count = "/".join(str(int(n)) for n in sorted(set(rows.num_samples.dropna())))
        final = set(data.cells.step)
        ticks = sorted({int(s) for s in rows.step})
        ax.set_xticks(ticks, [f"{s}\n(final)" if s in final else str(s) for s in ticks])
        ax.set_xlabel("training step (EMA weights)")
        ax.set_ylabel(f"{key} at {count} samples (mean over seeds, 95% interval)")
        ax.set_title(f"Learning curve: {key}, sampler {', '.join(dict.fromkeys(rows.sampler))}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return Plot("Learning curves of the headline metric", "learning_curves.png"), fig


def diagnostic_curve_figure(data: ReportData) -> tuple[Plot, Figure] | None:
    """Cheap diagnostics (e.g. the mean x0 error over t) at intermediate training steps, per arm. Not sample
    quality: the mean x0 error is dominated by its noisiest timesteps, so it is drawn apart from the headline."""
    extra = data.extra
    curve = extra[(extra.weights == "ema") & (extra.step != FINAL) & (extra.sampler == NO_SAMPLER)]
    keys = [k for k in dict.fromkeys(curve.key) if data.spec(k)["role"] != "curve"]
    if not keys:
        return None
    key = keys[0]
    final = data.results[data.results.key == key].merge(data.cells[["cell", "step"]].rename(columns={"step": "at"}),
                                                        on="cell")
    rows = [curve[curve.key == key][["arm", "seed", "step", "value"]],
            final.assign(step=final["at"])[["arm", "seed", "step", "value"]]]
    rows = pd.concat(rows)
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    shown = []
    for i, arm in enumerate(data.arms):
        sub = rows[rows.arm == arm]
        steps = sorted(set(sub.step))
        stats = [mean_ci(sub[sub.step == s].value.tolist()) for s in steps]
        if steps:
            _errorbars(ax, steps, stats, False, marker="o", color=f"C{i % 10}", label=arm)
            shown += [v for st in stats for v in (st.mean, st.low, st.high)]
    if _wants_log(shown):
        _log_scale(ax, "y", *_range(shown))
    metric = next(iter(curve[curve.key == key].metric), "").split("(")[0]
    _finish(fig, ax, "training step", f"{words(data, key, metric)}\n(mean over seeds, 95% interval)",
            "A diagnostic during training (not sample quality)")
    return Plot(f"Diagnostic during training: {metric} {key}", "diagnostic_curves.png"), fig


def _metric_vs_nfe(data: ReportData, key: str, groups: list[tuple[str, str]]) -> tuple[Plot, Figure]:
    fig = Figure(figsize=(7.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats = {g: data.interval(*g, key) for g in groups}
    floor = _floor(data, key)
    log = _wants_log([v for s in stats.values() for v in (s.mean, s.high)], floor)
    clipped = False
    for arm in data.arms:
        pts = sorted(((data.nfe(*g), stats[g], g[1]) for g in groups if g[0] == arm and data.nfe(*g) is not None), key=_by_x)
        if not pts:
            continue
        if len(data.arms) == 1:  # one arm: a legend entry per sampler, no labels on crowded points
            ax.plot([p[0] for p in pts], [p[1].mean for p in pts], color="0.6", zorder=1)
            for i, (x, s, sampler) in enumerate(pts):
                clipped |= _errorbars(ax, [x], [s], log, marker="os^D<>ph*X"[i % 10], linestyle="",
                                      color=f"C{i % 10}", label=sampler)
        else:
            clipped |= _errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], log, marker="o", label=arm)
    _floor_line(ax, floor)
    ax.set_xscale("log")
    if log:
        _log_scale(ax, "y", *_range([v for s in stats.values() for v in (s.low, s.mean, s.high)] + floor))
    _finish(fig, ax, "network evaluations per sample (NFE)", f"{key} (mean, 95% interval)",
            f"{key} against the number of network evaluations", clipped)
    return Plot(f"{key} vs NFE", f"{key}_vs_nfe.png"), fig


def _metric_by_group(data: ReportData, key: str, groups: list[tuple[str, str]]) -> tuple[Plot, Figure]:
    names = [data.group_name(*g) for g in groups]
    fig = Figure(figsize=(max(5.6, 1.0 + 0.9 * len(groups)), 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats = [data.interval(*g, key) for g in groups]
    floor = _floor(data, key)
    log = _wants_log([v for s in stats for v in (s.mean, s.high)], floor)
    clipped = False
    for i, s in enumerate(stats):
        clipped |= _errorbars(ax, [i], [s], log, marker="o", color=f"C{i % 10}")
    _floor_line(ax, floor)
    if log:
        _log_scale(ax, "y", *_range([v for s in stats for v in (s.low, s.mean, s.high)] + floor))
    ax.set_xticks(range(len(groups)), names, rotation=20 if max(map(len, names)) > 12 else 0, ha="right"
                  if max(map(len, names)) > 12 else "center", fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    nfe = data.nfe(*groups[0])
    _finish(fig, ax, "arm" if len(data.arms) > 1 else "sampler", f"{key} (mean, 95% interval)",
            f"{key} per {'arm' if len(data.arms) > 1 else 'sampler'}" + (f" ({nfe} NFE)" if nfe else ""), clipped)
    return Plot(f"{key} per arm", f"{key}_by_arm.png"), fig


def words(data: ReportData, key: str, metric: str = "") -> str:
    """A key as a reader says it: what its metric declares it to be (e.g. "mean x0 error over timesteps"),
    else the metric and key; wrapped to fit beside a plot."""
    return textwrap.fill(data.spec(key)["description"] or " ".join(p for p in (metric, key) if p), 42)


def _range(values: list[float]) -> tuple[float, float]:
    positive = [v for v in values if math.isfinite(v) and v > 0]
    return (min(positive), max(positive)) if positive else (1.0, 10.0)


def x0_error_figure(data: ReportData) -> tuple[Plot, Figure] | None:
    rows = data.results[(data.results.sampler == NO_SAMPLER) & data.results.key.str.startswith("t=")].copy()
    if rows.empty:
        return None
    rows["t"] = rows.key.str[2:].astype(int)
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for arm in data.arms:
        sub = rows[rows.arm == arm]
        ts = sorted(set(sub.t))
        stats = [mean_ci(sub[sub.t == t].value.tolist()) for t in ts]
        ax.plot(ts, [s.mean for s in stats], marker=".", label=arm)
        ax.fill_between(ts, [s.low if s.n > 1 else s.mean for s in stats],
                        [s.high if s.n > 1 else s.mean for s in stats], alpha=0.2)
    ax.set_xscale("symlog", linthresh=10)
    _log_scale(ax, "y", *_range(rows.value.tolist()))
    _finish(fig, ax, "timestep t", r"$E\,\|\hat{x}_0 - x_0\|^2$ per dimension",
            "x0 error by timestep (held-out data)")
    return Plot("x0 error vs t per arm", "x0_error_by_t.png"), fig


def loss_figure(data: ReportData) -> tuple[Plot, Figure] | None:
    if data.losses.empty:
        return None
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    shown = []
    for arm in data.arms:
        curve = data.losses[data.losses.arm == arm].groupby("step").loss.mean()
        smooth = curve.rolling(max(1, len(curve) // 30), min_periods=1).mean()
        ax.plot(curve.index, smooth, label=arm)
        shown += smooth.tolist()
    _log_scale(ax, "y", *_range(shown))
    _finish(fig, ax, "training step", "weighted loss (mean over seeds)",
            "Training loss, smoothed (scales differ between targets)")
    return Plot("Training loss curves", "loss_curves.png"), fig


def samples_figure(data: ReportData) -> tuple[Plot, Figure] | None:
    import torch

    from ablate.evaluate import samples_path
    from ablate.images import tile

    first = data.cells.sort_values("seed").drop_duplicates("arm")
    panels = []
    for row in first.itertuples():
        for sampler in data.samplers:
            path = samples_path(data.runs_dir / row.cell, sampler)
            if path.exists():
                panels.append((f"{row.arm}\n{sampler}" if len(first) > 1 else sampler, torch.load(path, weights_only=True)))
    if not panels:
        return None
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, x) in zip(axes.flat, panels, strict=False):
        if x.dim() == 4:
            grid = tile(x)
            c = grid.shape[2]
            ax.imshow(grid.squeeze(-1).numpy() if c == 1 else grid.numpy(), cmap="gray" if c == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3)
            ax.set_aspect("equal")
            ax.axis("on")
        ax.set_title(title, fontsize=8)
    fig.suptitle("Samples (seed 0 of each arm)")
    return Plot("Sample grids", "samples.png"), fig
