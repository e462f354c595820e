"""Figures over training steps: the headline metric's learning curve, cheap diagnostics at intermediate
steps and the training loss, per arm.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ablate.report.data import Plot, ReportData
from ablate.report.plotting import MARKERS, errorbars, finish, log_scale, value_range, wants_log, words
from ablate.stats import mean_ci
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA


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
            errorbars(ax, steps, stats, False, marker=MARKERS[i % 10], color=f"C{i % 10}",
                       label=arm if ax is axes[0] else None)
            shown += [v for st in stats for v in (st.mean, st.low, st.high)]
        floor = curve[(curve.sampler == REAL_DATA) & (curve.key == key)].value
        if len(floor):
            ax.axhline(floor.mean(), color="0.3", linestyle="--", linewidth=1,
                       label="real data (held-out), same count" if ax is axes[0] else None)
            shown.append(floor.mean())
        if wants_log(shown):
            log_scale(ax, "y", *value_range(shown))
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
            errorbars(ax, steps, stats, False, marker="o", color=f"C{i % 10}", label=arm)
            shown += [v for st in stats for v in (st.mean, st.low, st.high)]
    if wants_log(shown):
        log_scale(ax, "y", *value_range(shown))
    metric = next(iter(curve[curve.key == key].metric), "").split("(")[0]
    finish(fig, ax, "training step", f"{words(data, key, metric)}\n(mean over seeds, 95% interval)",
            "A diagnostic during training (not sample quality)")
    return Plot(f"Diagnostic during training: {metric} {key}", "diagnostic_curves.png"), fig


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
    log_scale(ax, "y", *value_range(shown))
    finish(fig, ax, "training step", "weighted loss (mean over seeds)",
            "Training loss, smoothed (scales differ between targets)")
    return Plot("Training loss curves", "loss_curves.png"), fig
