"""The report's data layer: everything a report shows, read from the store once into one `ReportData`.

The text and plot layers read only this object, never the store, so a new section (contrasts, floors,
learning curves) adds a field here and a function there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ablate import halves
from ablate.datatypes import declared_spec
from ablate.identity import outdated
from ablate.stats import Summary, clipped_bootstrap, mean_ci
from ablate.store import FINAL, LADDER, NO_SAMPLER, REAL_DATA, Store

if TYPE_CHECKING:
    from ablate.plugins import Registry

ALPHA = 0.05
NOT_DECLARED = {"direction": "none", "role": "headline", "nonnegative": False, "description": ""}


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
    results: pd.DataFrame  # Store.results: final EMA metric rows of the run's cells (the floor, not the ladder)
    losses: pd.DataFrame  # cell, step, loss, arm, seed
    hardware: dict[str, Any]  # of the run that did the work
    wall_seconds: float | None  # completed runs of this study and profile, summed
    runs_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)  # the run's recorded settings
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)  # learning-curve and raw-weight rows (Store.results)
    changed: dict[str, str] = field(default_factory=dict)  # 'kind/name' -> current identity: code changed since
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # units that failed (Store.run_failures)
    halves: pd.DataFrame = field(default_factory=pd.DataFrame)  # generalisation rows of pairs of halves (ablate.halves)
    ladder: pd.DataFrame = field(default_factory=pd.DataFrame)  # the calibration ladder's rows (ablate.ladder)

    def spec(self, key: str) -> dict[str, Any]:
        """What the metric that wrote `key` declared about it (the run records the declarations). A key no
        metric declares is shown like a headline with no direction: tabulated, never called best."""
        return dict(declared_spec(self.settings.get("metric_keys", {}), key) or NOT_DECLARED)

    def direction(self, key: str) -> str:
        return self.spec(key)["direction"]

    @cached_property
    def contrasts(self) -> list[dict[str, Any]]:
        return self.settings.get("contrasts") or []

    @cached_property
    def arms(self) -> list[str]:
        """The study's arms as run, then its companions' (other studies shown beside it)."""
        return list(dict.fromkeys([*self.cells.arm, *self.results.arm]))

    @cached_property
    def sampled(self) -> pd.DataFrame:
        """Rows of metrics computed on samples (not the model diagnostics)."""
        return self.results[self.results.sampler != NO_SAMPLER]

    @cached_property
    def samplers(self) -> list[str]:
        """Samplers, most network evaluations first (not the real-data floor)."""
        nfe = self.sampled.groupby("sampler").nfe.max()
        return sorted(set(self.sampled.sampler) - {REAL_DATA}, key=lambda s: (-(nfe.get(s) or 0), s))

    def _keys(self, role: str) -> list[str]:
        return [k for k in dict.fromkeys(self.sampled.key) if self.spec(k)["role"] == role]

    @cached_property
    def keys(self) -> list[str]:
        """The headline keys (the results table's columns), in the order the metrics wrote them."""
        return self._keys("headline")

    @cached_property
    def diagnostics(self) -> list[str]:
        """Declared diagnostic keys of the sampled metrics (a table of their own), e.g. the memorisation distance."""
        return [k for k in self._keys("diagnostic") if k != "classifier_test_acc"]

    @property
    def primary(self) -> str | None:
        """The key the comparisons are about: the first declared contrast's, else the first headline key."""
        if self.contrasts:
            return self.contrasts[0]["metric"]
        return self.keys[0] if self.keys else None

    def interval(self, arm: str, sampler: str, key: str) -> Summary:
        """Mean and 95% interval over seeds; a non-negative key's interval never goes below zero."""
        return self.interval_of(key, self.values(arm, sampler, key))

    def interval_of(self, key: str, values: list[float]) -> Summary:
        """Mean and 95% interval of some values of `key` (clipped at zero for a non-negative key)."""
        if not self.spec(key)["nonnegative"] or len(values) < 2:
            return mean_ci(values)
        ci = clipped_bootstrap(values)
        return Summary(ci.n, ci.center, math.nan, ci.low, ci.high)

    @cached_property
    def curve(self) -> pd.DataFrame:
        """The learning curve of the headline (`eval.curve_samples`): headline keys of the sample metrics at each
        evaluated step (EMA weights, one sampler, the smaller count; the final weights at step = train.steps),
        and their real-data floor at the same count (stored at step = train.steps)."""
        if self.extra.empty:
            return self.extra
        rows = self.extra[(self.extra.weights == "ema") & (self.extra.step != FINAL) & (self.extra.sampler != NO_SAMPLER)]
        return rows[rows.key.map(lambda k: self.spec(k)["role"] == "headline")]

    @cached_property
    def floors(self) -> pd.DataFrame:
        return self.sampled[self.sampled.sampler == REAL_DATA]

    @cached_property
    def groups(self) -> list[tuple[str, str]]:
        """(arm, sampler) pairs: arms in the order run, samplers by NFE."""
        pairs = dict.fromkeys(zip(self.sampled.arm, self.sampled.sampler, strict=True))
        order = [*self.samplers, REAL_DATA]
        return sorted(pairs, key=lambda g: (self.arms.index(g[0]) if g[0] in self.arms else 0, order.index(g[1])))

    @property
    def hardware_label(self) -> str:
        hw = self.hardware
        threads = hw.get("torch_threads", "?")
        return hw.get("gpu") or f"{hw.get('cpu', '?')} ({threads} thread{'' if threads == 1 else 's'})"

    def values(self, arm: str, sampler: str, key: str) -> list[float]:
        """The per-seed values of one result, by seed."""
        main = self.sampled
        return main[(main.arm == arm) & (main.sampler == sampler) & (main.key == key)].sort_values("seed").value.tolist()

    def summary(self, arm: str, sampler: str, key: str) -> Summary:
        return mean_ci(self.values(arm, sampler, key))

    def nfe(self, arm: str, sampler: str) -> int | None:
        nfe = self.sampled[(self.sampled.arm == arm) & (self.sampled.sampler == sampler)].nfe.dropna()
        return int(nfe.iloc[0]) if len(nfe) else None

    def group_name(self, arm: str, sampler: str) -> str:
        """The shortest name that tells groups apart: the sampler, the arm, or both."""
        if len(self.arms) == 1:
            return sampler
        if len(self.samplers) == 1:
            return arm
        return f"{arm} / {sampler}"


def split_axis(arm: str) -> tuple[str, tuple[str, float] | None]:
    """'x0 + D=8' -> ('x0', ('D', 8.0)): the arm without its one numeric `name=value` part."""
    parts = arm.split(" + ")
    numeric = []
    for i, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if sep:
            try:
                numeric.append((i, name, float(value)))
            except ValueError:
                pass
    if len(numeric) != 1:
        return arm, None
    i, name, value = numeric[0]
    return " + ".join(p for j, p in enumerate(parts) if j != i), (name, value)


def load(store: Store, study: str, profile: str, runs_dir: Path, registry: Registry | None = None) -> ReportData:
    """registry: the plugins as installed now, to tell reported results whose plugin code has changed since."""
    run_id = store.latest_run(study, profile)
    cells = store.run_cells(run_id)
    losses = store.losses(cells.cell.tolist())
    losses = losses.merge(cells[["cell", "arm", "seed"]], on="cell") if len(losses) else losses
    run = store.run(run_id)
    everything = store.results(study, run_id=run_id, final_only=False)
    extra = everything[(everything.step != FINAL) | (everything.weights != "ema")]
    settings = json.loads(run.settings or "{}")
    results = pd.concat([store.results(study, run_id=run_id), *_companions(store, settings, profile)], ignore_index=True)
    on_ladder = results.sampler.isin(LADDER)
    return ReportData(study=study, profile=profile, run=run, cells=cells, results=results[~on_ladder].reset_index(drop=True),
                      ladder=results[on_ladder].reset_index(drop=True),
                      losses=losses, hardware=store.worker_hardware(study, profile),
                      wall_seconds=store.wall_seconds(study, profile), runs_dir=runs_dir,
                      settings=settings, extra=extra.reset_index(drop=True), failures=store.run_failures(run_id),
                      halves=halves.rows(store, run_id, settings.get("samplers")),
                      changed={} if registry is None else outdated(_recorded(store, cells, pd.concat([results, extra])),
                                                                   registry, json.loads(run.plugins or "{}")))


def _recorded(store: Store, cells: pd.DataFrame, results: pd.DataFrame) -> list[dict[str, str]]:
    """The plugin identities recorded by the reported cells (the run's and its companions') and evaluations."""
    keys = sorted({*cells.cell, *results.cell})
    evals = set(zip(results.cell, results.sampler, results.metric, strict=True))
    marks = ",".join("?" * len(keys))
    found = set(store.frame(f"SELECT DISTINCT plugins FROM cells WHERE key IN ({marks})", tuple(keys)).plugins)
    rows = store.frame(f"SELECT DISTINCT cell, sampler, metric, plugins FROM evals WHERE cell IN ({marks})", tuple(keys))
    found |= {p for c, s, m, p in rows.itertuples(index=False) if (c, s, m) in evals}
    return [json.loads(p) for p in sorted(found - {None})]


def _companions(store: Store, settings: dict[str, Any], profile: str) -> list[pd.DataFrame]:
    """The final results of the studies this one names as companions, their arms relabelled
    '<label> + <arm>' (e.g. the exact oracle at each D beside the trained arms)."""
    frames = []
    for tag, name in settings.get("companions", {}).items():
        run_id = store.latest_run(name, profile)
        if run_id is None:
            continue
        rows = store.results(name, run_id=run_id)
        rows = rows[~rows.sampler.isin([REAL_DATA, *LADDER])]  # the floor and the ladder are this study's own
        frames.append(rows.assign(arm=[f"{tag} + {arm}" for arm in rows.arm]))
    return frames
