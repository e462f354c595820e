"""The report's plots: every figure the data supports, saved in report order. Each builder reads only a
`ReportData` and returns the figure (for tests); they live by family in ablate.report.metric_plots,
training_plots and model_plots, on the shared drawing of ablate.report.plotting.
"""

from __future__ import annotations

from pathlib import Path

from ablate.report.data import Plot, ReportData
from ablate.report.metric_plots import axis_figure, metric_figure
from ablate.report.model_plots import samples_figure, x0_error_figure
from ablate.report.training_plots import diagnostic_curve_figure, headline_curve_figure, loss_figure

__all__ = ["axis_figure", "diagnostic_curve_figure", "draw", "headline_curve_figure", "loss_figure", "metric_figure",
           "samples_figure", "x0_error_figure"]

DPI = 110


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
