"""The report's data layer: everything a report shows, read from the store once into one `ReportData`.

The text and plot layers read only this object, never the store, so a new section (contrasts, floors,
learning curves) adds a field here and a function there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ablate.stats import Summary, mean_ci
from ablate.store import NO_SAMPLER, Store

# metric key -> True if lower is better (None: neither); the first present key is the report's primary metric
DIRECTION: dict[str, bool | None] = {"fid": True, "kid": True, "max_weight_error": True, "modes_covered": False,
                                     "off_mode_fraction": True, "nll": True, "std_ratio": None}
HIDDEN_KEYS = {"classifier_test_acc", "kid_std"}  # stored, but not shown as result columns
ALPHA = 0.05


@dataclass(frozen=True)
class Plot:
    """A plot of the report: its title and PNG file name (in the report's folder)."""

    title: str
    file: str


@dataclass
class ReportData:
    """One report's inputs: the latest run of a study and profile, its cells, results and losses."""

    study: str
    profile: str
    run: pd.Series  # the runs-table row of the latest run
    cells: pd.DataFrame  # Store.run_cells
    results: pd.DataFrame  # Store.results: final EMA metric rows of the run's cells
    losses: pd.DataFrame  # cell, step, loss, arm, seed
    hardware: dict[str, Any]  # of the run that did the work
    wall_seconds: float | None  # completed runs of this study and profile, summed
    runs_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)  # the run's recorded settings

    @cached_property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(self.cells.arm))

    @cached_property
    def sampled(self) -> pd.DataFrame:
        """Rows of metrics computed on samples (not the model diagnostics)."""
        return self.results[self.results.sampler != NO_SAMPLER]

    @cached_property
    def samplers(self) -> list[str]:
        """Samplers, most network evaluations first."""
        nfe = self.sampled.groupby("sampler").nfe.max()
        return sorted(dict.fromkeys(self.sampled.sampler), key=lambda s: (-(nfe.get(s) or 0), s))

    @cached_property
    def main(self) -> pd.DataFrame:
        """The rows shown in the results table."""
        return self.sampled[~self.sampled.key.isin(HIDDEN_KEYS)]

    @cached_property
    def keys(self) -> list[str]:
        present = set(self.main.key)
        return [k for k in DIRECTION if k in present]

    @property
    def primary(self) -> str | None:
        return self.keys[0] if self.keys else None

    @cached_property
    def groups(self) -> list[tuple[str, str]]:
        """(arm, sampler) pairs: arms in the order run, samplers by NFE."""
        pairs = dict.fromkeys(zip(self.main.arm, self.main.sampler, strict=True))
        return sorted(pairs, key=lambda g: (self.arms.index(g[0]) if g[0] in self.arms else 0, self.samplers.index(g[1])))

    @property
    def hardware_label(self) -> str:
        hw = self.hardware
        return hw.get("gpu") or f"{hw.get('cpu', '?')} ({hw.get('torch_threads', '?')} threads)"

    def values(self, arm: str, sampler: str, key: str) -> list[float]:
        """The per-seed values of one result, by seed."""
        main = self.main
        return main[(main.arm == arm) & (main.sampler == sampler) & (main.key == key)].sort_values("seed").value.tolist()

    def summary(self, arm: str, sampler: str, key: str) -> Summary:
        return mean_ci(self.values(arm, sampler, key))

    def nfe(self, arm: str, sampler: str) -> int | None:
        nfe = self.main[(self.main.arm == arm) & (self.main.sampler == sampler)].nfe.dropna()
        return int(nfe.iloc[0]) if len(nfe) else None

    def group_name(self, arm: str, sampler: str) -> str:
        """The shortest name that tells groups apart: the sampler, the arm, or both."""
        if len(self.arms) == 1:
            return sampler
        if len(self.samplers) == 1:
            return arm
        return f"{arm} / {sampler}"


def lower_is_better(key: str) -> bool:
    return DIRECTION.get(key) is not False


def load(store: Store, study: str, profile: str, runs_dir: Path) -> ReportData:
    run_id = store.latest_run(study, profile)
    cells = store.run_cells(run_id)
    losses = store.losses(cells.cell.tolist())
    losses = losses.merge(cells[["cell", "arm", "seed"]], on="cell") if len(losses) else losses
    run = store.run(run_id)
    return ReportData(study=study, profile=profile, run=run, cells=cells, results=store.results(study, run_id=run_id),
                      losses=losses, hardware=store.worker_hardware(study, profile),
                      wall_seconds=store.wall_seconds(study, profile), runs_dir=runs_dir,
                      settings=json.loads(run.settings or "{}"))
