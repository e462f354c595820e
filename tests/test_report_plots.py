"""The report's plots on small synthetic frames: every label inside the canvas, readable log ticks,
one legend entry per sampler (no point labels, no "default"), honest CIs on a log axis."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ablate.report import plots
from ablate.report.data import ReportData
from ablate.store import REAL_DATA

ONE_STEP = {"ancestral": 1000, "one_step(jump_at=20)": 980, "one_step(jump_at=100)": 900,
            "one_step(jump_at=300)": 700, "one_step(jump_at=500)": 500, "one_step(jump_at=900)": 100, "one_step": 1}


def _data(arms: dict[str, dict[str, list[float]]], nfe: dict[str, int]) -> ReportData:
    """arms: arm -> sampler -> per-seed FIDs; each arm also gets x0 errors and a loss curve."""
    results, cells, losses = [], [], []
    for a, (arm, by_sampler) in enumerate(arms.items()):
        for seed in range(len(next(iter(by_sampler.values())))):
            cell = f"{a}-{seed}"
            cells.append({"cell": cell, "arm": arm, "seed": seed, "config": json.dumps({"seed": seed}), "status": "done",
                          "reason": None, "train_seconds": 1.0, "num_params": 10, "step": 3000})
            for sampler, fids in by_sampler.items():
                results.append({"arm": arm, "seed": seed, "cell": cell, "sampler": sampler, "metric": "fid", "key": "fid",
                                "value": fids[seed], "num_samples": 100, "nfe": nfe[sampler], "seconds": 1.0})
            for t in (0, 10, 100, 999):
                results.append({"arm": arm, "seed": seed, "cell": cell, "sampler": "-", "metric": "x0_error_by_t",
                                "key": f"t={t}", "value": 1e-4 * (1 + t) * (a + 1), "num_samples": 50, "nfe": None,
                                "seconds": 0.1})
            losses += [{"cell": cell, "arm": arm, "seed": seed, "step": s, "loss": 0.15 + 10 * (a + 1) / s} for s in range(10, 3001, 10)]
    run = pd.Series({"study": "demo", "profile": "quick", "study_file": "demo.toml", "plugins": "{}", "settings": "{}"})
    return ReportData("demo", "quick", run, pd.DataFrame(cells), pd.DataFrame(results), pd.DataFrame(losses),
                      {"cpu": "test"}, None, Path("."))


ONE_ARM = _data({"default": {s: [10.0 ** (1 + i * 0.7) * f for f in (0.95, 1.0, 1.05)] for i, s in enumerate(ONE_STEP)}}, ONE_STEP)
# arm "b": FIDs 1 and 40 -> the 95% CI (mean 20.5, half-width 247.7) reaches far below 0; the range spans > 2 decades
FOUR_ARMS = _data({"a": {"ancestral": [300.0, 310.0]}, "b": {"ancestral": [1.0, 40.0]},
                   "x0 + eps_equivalent": {"ancestral": [5000.0, 5200.0]}, "d": {"ancestral": [900.0, 950.0]}},
                  {"ancestral": 1000})
def _with_curve(data: ReportData) -> ReportData:
    """The headline's learning curve: fid at 50 samples at steps 500, 1000 and the final 3000, and its floor."""
    rows = [{**r, "step": step, "weights": "ema", "num_samples": 50, "value": r["value"] * (1 + 1000 / step)}
            for r in data.results.to_dict("records") if r["sampler"] == "ancestral" for step in (500, 1000, 3000)]
    rows += [{**rows[0], "arm": arm, "seed": seed, "sampler": "real data (held-out)", "step": 3000, "value": 2.0 + seed}
             for arm in data.arms for seed in range(2)]
    data.extra = pd.DataFrame(rows)
    return data


CURVE = _with_curve(_data({"a": {"ancestral": [300.0, 310.0]}, "x0 + eps_equivalent": {"ancestral": [500.0, 520.0]}},
                          {"ancestral": 1000}))
FIGURES = {
    "one arm, metric vs NFE": lambda: plots.metric_figure(ONE_ARM, "fid"),
    "four arms, metric by arm": lambda: plots.metric_figure(FOUR_ARMS, "fid"),
    "x0 error": lambda: plots.x0_error_figure(FOUR_ARMS),
    "losses": lambda: plots.loss_figure(FOUR_ARMS),
    "headline learning curve": lambda: plots.headline_curve_figure(CURVE),
}


def _drawn(build):
    plot, fig = build()
    FigureCanvasAgg(fig).draw()
    return plot, fig


@pytest.mark.parametrize("name", FIGURES)
def test_every_label_fits_the_figure(name):
    _, fig = _drawn(FIGURES[name])
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, every artist with its text
    width, height = fig.get_size_inches()
    assert box.x0 >= -0.01 and box.y0 >= -0.01 and box.x1 <= width + 0.01 and box.y1 <= height + 0.01, (box, width, height)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_one_arm_vs_nfe_names_each_sampler_in_the_legend_not_on_the_points():
    plot, fig = _drawn(FIGURES["one arm, metric vs NFE"])
    assert plot.file == "fid_vs_nfe.png"
    assert _legend_texts(fig) == list(ONE_STEP)[::-1]  # by NFE, no "default"
    assert not fig.axes[0].texts  # no point annotations to overlap


def test_one_nfe_gives_a_point_per_arm_and_a_clipped_ci_is_marked():
    plot, fig = _drawn(FIGURES["four arms, metric by arm"])
    ax = fig.axes[0]
    assert plot.file == "fid_by_arm.png"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "x0 + eps_equivalent", "d"]
    assert ax.get_yscale() == "log"  # 20.5 .. 5100 spans more than two decades
    assert "CI reaches ≤ 0 (off the log axis)" in _legend_texts(fig)
    markers = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [1]  # only arm "b"'s CI reaches below 0


def test_log_axes_label_more_than_the_powers_of_ten():
    _, fig = _drawn(FIGURES["losses"])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    labelled = [t for t in ax.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(labelled) >= 4, [t.get_text() for t in labelled]  # losses 0.15 .. 4.15: 0.2, 0.5, 1, 2 at least


def test_the_headline_learning_curve_has_a_point_per_step_and_the_floor():
    plot, fig = _drawn(FIGURES["headline learning curve"])
    ax = fig.axes[0]
    assert plot.file == "learning_curves.png"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["500", "1000", "3000\n(final)"]
    assert _legend_texts(fig) == ["real data (held-out), same count", "a", "x0 + eps_equivalent"]
    floor = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == 2.5  # the mean floor over seeds at the curve's count
    assert "at 50 samples" in ax.get_ylabel() and "training step" in ax.get_xlabel()


def _with_floor(data: ReportData, floor: float) -> ReportData:
    """The same data with a real-data floor row per cell (what real images score on the metric)."""
    cells = data.results[data.results.sampler != "-"].drop_duplicates("cell")
    rows = cells.assign(sampler=REAL_DATA, value=floor, nfe=None)
    return replace(data, results=pd.concat([data.results, rows], ignore_index=True))


def _floor_y(ax) -> float:
    return next(line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "real data (held-out)")


def test_the_floor_is_drawn_off_the_x_axis_when_arms_are_far_above_it():
    # arms 30-42x the floor, within 1.4x of each other: a linear axis from 0 would flatten the floor onto the x-axis
    near = _data({"a": {"ancestral": [300.0, 310.0]}, "b": {"ancestral": [400.0, 420.0]}}, {"ancestral": 1000})
    _, fig = _drawn(lambda: plots.metric_figure(_with_floor(near, 10.0), "fid"))
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log" and _floor_y(ax) == 10.0 and low < 10.0 < high
    # and a floor the arms are only a few times above keeps the linear axis
    _, fig = _drawn(lambda: plots.metric_figure(_with_floor(near, 100.0), "fid"))
    assert fig.axes[0].get_yscale() == "linear" and _floor_y(fig.axes[0]) == 100.0


def test_a_metric_against_nfe_draws_the_floor_too():
    _, fig = _drawn(lambda: plots.metric_figure(_with_floor(ONE_ARM, 1.0), "fid"))
    ax = fig.axes[0]
    assert _floor_y(ax) == 1.0 and ax.get_ylim()[0] < 1.0 and "real data (held-out)" in _legend_texts(fig)
    by_arm = {"eps": {s: [v * 30 for v in (9.5, 10.0, 10.5)] for s in ONE_STEP}, "x0": {s: [20.0, 21.0, 22.0] for s in ONE_STEP}}
    _, fig = _drawn(lambda: plots.metric_figure(_with_floor(_data(by_arm, ONE_STEP), 1.0), "fid"))  # a panel per arm
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and _floor_y(ax) == 1.0 and ax.get_ylim()[0] < 1.0


def test_the_learning_curve_is_labelled_in_words():
    data = FOUR_ARMS
    curve = data.results[data.results.sampler == "-"].assign(key="mean", step=100, weights="ema")
    settings = {"metric_keys": {"x0_error_by_t": {"mean": {"direction": "lower", "role": "diagnostic", "nonnegative": True,
                                                           "description": "mean x0 error over timesteps"}}}}
    cells = data.cells.assign(step=200)
    _, fig = _drawn(lambda: plots.diagnostic_curve_figure(replace(data, extra=curve, cells=cells, settings=settings,
                                                          results=pd.concat([data.results, curve.assign(step=-1)]))))
    label = " ".join(fig.axes[0].get_ylabel().split())
    assert label == "mean x0 error over timesteps (mean over seeds, 95% interval)"


def test_a_mean_below_its_clipped_interval_still_draws():
    """KID is unbiased, so a mean can fall below 0 while a non-negative key's interval is clipped at 0."""
    import math

    from matplotlib.figure import Figure

    from ablate.report.plotting import errorbars
    from ablate.stats import Summary

    fig = Figure()
    ax = fig.add_subplot()
    errorbars(ax, [1.0, 2.0], [Summary(6, -0.003, math.nan, 0.0, 0.01), Summary(6, 0.5, math.nan, 0.4, 0.6)], False)
    assert len(ax.containers) == 1
