"""Figures of one metric across the study's arms and samplers: against the number of network evaluations
(a line per sampler family, a panel per arm when there are many), per arm/sampler, or against a numeric
axis of the arms; each with the real-data floor.
"""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from ablate.report.data import Plot, ReportData, split_axis
from ablate.report.plotting import MARKERS, by_x, errorbars, finish, log_scale, value_range, wants_log
from ablate.store import REAL_DATA


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


def _metric_vs_nfe(data: ReportData, key: str, groups: list[tuple[str, str]]) -> tuple[Plot, Figure]:
    fig = Figure(figsize=(7.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats = {g: data.interval(*g, key) for g in groups}
    floor = _floor(data, key)
    log = wants_log([v for s in stats.values() for v in (s.mean, s.high)], floor)
    clipped = False
    for arm in data.arms:
        pts = sorted(((data.nfe(*g), stats[g], g[1]) for g in groups if g[0] == arm and data.nfe(*g) is not None), key=by_x)
        if not pts:
            continue
        if len(data.arms) == 1:  # one arm: a legend entry per sampler, no labels on crowded points
            ax.plot([p[0] for p in pts], [p[1].mean for p in pts], color="0.6", zorder=1)
            for i, (x, s, sampler) in enumerate(pts):
                clipped |= errorbars(ax, [x], [s], log, marker=MARKERS[i % 10], linestyle="",
                                      color=f"C{i % 10}", label=sampler)
        else:
            clipped |= errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], log, marker="o", label=arm)
    _floor_line(ax, floor)
    ax.set_xscale("log")
    if log:
        log_scale(ax, "y", *value_range([v for s in stats.values() for v in (s.low, s.mean, s.high)] + floor))
    finish(fig, ax, "network evaluations per sample (NFE)", f"{key} (mean, 95% interval)",
            f"{key} against the number of network evaluations", clipped)
    return Plot(f"{key} vs NFE", f"{key}_vs_nfe.png"), fig


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
        log = wants_log([v for st in stats.values() for v in (st.mean, st.high)], floor)
        for i, family in enumerate(names):
            pts = sorted(((data.nfe(*g), st) for g, st in stats.items() if families[g[1]] == family and data.nfe(*g)),
                         key=by_x)
            if pts:
                clipped |= errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], log, marker=MARKERS[i % 10],
                                      color=f"C{i % 10}", label=family if ax is axes.flat[0] else None)
        _floor_line(ax, floor)
        ax.set_xscale("log")
        if log:
            log_scale(ax, "y", *value_range([v for st in stats.values() for v in (st.low, st.mean, st.high)] + floor))
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


def _metric_by_group(data: ReportData, key: str, groups: list[tuple[str, str]]) -> tuple[Plot, Figure]:
    names = [data.group_name(*g) for g in groups]
    fig = Figure(figsize=(max(5.6, 1.0 + 0.9 * len(groups)), 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats = [data.interval(*g, key) for g in groups]
    floor = _floor(data, key)
    log = wants_log([v for s in stats for v in (s.mean, s.high)], floor)
    clipped = False
    for i, s in enumerate(stats):
        clipped |= errorbars(ax, [i], [s], log, marker="o", color=f"C{i % 10}")
    _floor_line(ax, floor)
    if log:
        log_scale(ax, "y", *value_range([v for s in stats for v in (s.low, s.mean, s.high)] + floor))
    ax.set_xticks(range(len(groups)), names, rotation=20 if max(map(len, names)) > 12 else 0, ha="right"
                  if max(map(len, names)) > 12 else "center", fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    nfe = data.nfe(*groups[0])
    finish(fig, ax, "arm" if len(data.arms) > 1 else "sampler", f"{key} (mean, 95% interval)",
            f"{key} per {'arm' if len(data.arms) > 1 else 'sampler'}" + (f" ({nfe} NFE)" if nfe else ""), clipped)
    return Plot(f"{key} per arm", f"{key}_by_arm.png"), fig


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
                      if r == rest and data.values(arm, sampler, key)), key=by_x)
        if pts:
            stats_all += [p[1] for p in pts]
            errorbars(ax, [p[0] for p in pts], [p[1] for p in pts], False, marker="o", color=f"C{i % 10}", label=rest)
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
    finish(fig, ax, name, f"{key} (mean, 95% interval, {sampler})", f"{key} against {name}")
    return Plot(f"{key} vs {name}", f"{key}_vs_{name}.png"), fig


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


def _parse_label(label: str) -> tuple[str, dict[str, str]]:
    """'ddim(steps=10, eta=1.0)' -> ('ddim', {'steps': '10', 'eta': '1.0'}) (defaults are left out of labels)."""
    name, _, rest = label.partition("(")
    params = dict(p.split("=", 1) for p in rest.rstrip(")").split(", ") if "=" in p)
    return name, params


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
