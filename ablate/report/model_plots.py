"""Figures of the trained models themselves: the x0 error by timestep on held-out data, and the samples
(image grids, or scatter plots of point data).
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from ablate.report.data import Plot, ReportData
from ablate.report.plotting import finish, log_scale, value_range
from ablate.stats import mean_ci
from ablate.store import NO_SAMPLER


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
    log_scale(ax, "y", *value_range(rows.value.tolist()))
    finish(fig, ax, "timestep t", r"$E\,\|\hat{x}_0 - x_0\|^2$ per dimension",
            "x0 error by timestep (held-out data)")
    return Plot("x0 error vs t per arm", "x0_error_by_t.png"), fig


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
