"""Experiment trackers mirror the results store; they never feed it and never stop a run.

The driver (the only writer of the store, also with remote executors) hands each tracker a cell right
after that cell's line comes back: the rows the store holds of it that this tracker has not logged yet
(`TrackedCell`). What each tracker has logged is recorded in the store's `tracked` table (tracker label,
destination, cell, what), so a rerun or a resumed cell logs nothing twice and a tracker added to a
finished study gets its whole history. A tracker that raises is named in one line on stderr and left
out for the rest of the run; the results are stored whatever it does.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ablate.errors import AblateError
from ablate.grid import arm_entries
from ablate.images import grid_image
from ablate.overrides import flatten
from ablate.schema import plugin_sections, validate_plugin
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA, Store

if TYPE_CHECKING:
    import numpy as np

    from ablate.interfaces import Tracker
    from ablate.study import Cell, Study

TABLE = """CREATE TABLE IF NOT EXISTS tracked (
    tracker TEXT NOT NULL, destination TEXT NOT NULL, cell TEXT NOT NULL, what TEXT NOT NULL, step INTEGER,
    PRIMARY KEY (tracker, destination, cell, what))"""
PARAMS, LOSSES = "params", "losses"  # `what` of the config and tags, and of the loss curve (step: the last logged)


@dataclass(frozen=True)
class Point:
    """One stored metric value: `step` is the training step of the evaluated weights (the final
    evaluation at `train.steps`), `weights` "ema" or "raw"."""

    sampler: str
    metric: str
    key: str
    step: int
    weights: str
    value: float

    @property
    def name(self) -> str:
        """'sampler/metric/key' ('metric/key' for a model diagnostic), under 'raw/' for the raw weights."""
        parts = [self.metric, self.key] if self.sampler == NO_SAMPLER else [self.sampler, self.metric, self.key]
        return "/".join((["raw"] if self.weights == "raw" else []) + parts)


@dataclass
class TrackedCell:
    """What a tracker logs of one training cell: who it is, always, and what it has not logged yet."""

    study: str
    profile: str | None
    key: str  # the cell key: the hash of its resolved config, its folder under the runs dir
    arm: str
    seed: int
    axes: dict[str, str]  # each axis of the study's grid and arms -> this cell's value
    config: dict[str, Any]  # the resolved config
    plugins: dict[str, str]  # "kind/name" -> code identity, of the cell's and the evaluations' plugins
    status: str  # the cell's status in the store: trained, done, failed, ...
    first: bool  # nothing of this cell logged yet: log the config and tags (params, hparams)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), new ones
    metrics: list[Point] = field(default_factory=list)  # new ones, every evaluated step
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # sampler label -> RGB uint8 [H, W, 3], new ones

    @property
    def final_step(self) -> int:
        return int(self.config["train"]["steps"])

    def params(self) -> dict[str, str | int | float | bool]:
        """The resolved config as flat dotted keys ('train.lr', 'model.hidden', 'seed'): numbers, booleans
        and strings as they are, lists as JSON, None as 'None'."""
        return {k: json.dumps(v) if isinstance(v, list) else v if isinstance(v, str | int | float | bool) else str(v)
                for k, v in flatten(self.config).items()}

    def tags(self) -> dict[str, str]:
        """What names the cell: its key, study, profile, arm, seed, axis values and plugin identities."""
        tags = {"ablate.cell": self.key, "ablate.study": self.study, "ablate.arm": self.arm, "ablate.seed": str(self.seed)}
        if self.profile:
            tags["ablate.profile"] = self.profile
        return tags | {f"axis.{k}": v for k, v in self.axes.items()} | {f"plugin.{k}": v for k, v in self.plugins.items()}


def add_trackers(study: Study, names: Iterable[str]) -> None:
    """`ablate run --track NAME`: one more `[[tracker]]` table with the plugin's defaults (unless the study has it)."""
    for name in names:
        table, errors = validate_plugin(study.registry, "tracker", {"name": name}, "--track")
        if errors:
            raise AblateError("; ".join(e.replace("--track.name: ", "--track: ") for e in errors), file=str(study.path))
        if table not in study.sections["tracker"]:
            study.sections["tracker"].append(table)


def axis_values(study: Study, cell: Cell) -> dict[str, str]:
    """Each key the study's grid or arms vary -> its value in this cell (a plugin table by its label)."""
    keys = list(study.raw.get("grid", {})) + [k for arm in study.raw.get("arm", []) for k in arm_entries(arm)]
    kinds = plugin_sections(many=False)
    out = {}
    for key in dict.fromkeys(keys):
        if key in kinds:
            out[key] = study.registry.label(kinds[key], cell.config[key])
        else:
            value: Any = cell.config
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            out[key] = str(value)
    return out


def forget(store: Store, cells: Iterable[str], evals: Iterable[tuple[str, str, str]]) -> None:
    """Recomputed results are logged again: cells (everything) and (cell, sampler, metric) evaluations
    (with the sampler's grid) that `--recompute-stale` deletes lose their `tracked` rows."""
    if store.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tracked'").fetchone() is None:
        return
    with store.db:
        store.db.executemany("DELETE FROM tracked WHERE cell=?", [(key,) for key in cells])
        for key, sampler, metric in evals:
            prefix = "eval " + json.dumps([sampler, metric])[:-1] + ","
            store.db.execute("DELETE FROM tracked WHERE cell=? AND (substr(what, 1, length(?)) = ? OR what = ?)",
                             (key, prefix, prefix, f"grid {sampler}"))


@contextmanager
def quiet() -> Iterator[None]:
    """A tracker library's own deprecation notices are not the study's warnings (they would be printed with them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def failure_line(label: str, origin: str, exc: BaseException) -> str:
    """The one line that names a failed tracker: its label, where it comes from and the error."""
    message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (f"tracker {label} [{origin}] failed and is off for the rest of this run "
            f"(the results store is unaffected): {type(exc).__name__}{': ' + message if message else ''}")


class Mirror:
    """The study's trackers, each fed from the store cell by cell. Without trackers it does nothing."""

    def __init__(self, study: Study, store: Store, runs_dir: Path, plugins: dict[str, dict[str, str]],
                 labels: dict[str, list[str]]) -> None:
        self.study, self.store, self.runs_dir, self.plugins = study, store, runs_dir, plugins
        self.samplers = labels["samplers"]
        self.evaluated = (set(labels["samplers"]) | {NO_SAMPLER, REAL_DATA}, set(labels["metrics"]))
        self.cells = {c.key: c for c in study.cells}
        self.active: list[tuple[str, Tracker, str]] = []  # (label, tracker, destination)
        if study.sections["tracker"]:
            store.db.execute(TABLE)
        for table in study.sections["tracker"]:
            label = study.registry.label("tracker", table)
            tracker = study.registry.from_table("tracker", table)
            try:
                with quiet():
                    self.active.append((label, tracker, str(tracker.open(study.name, runs_dir))))  # type: ignore[attr-defined]
            except Exception as exc:
                self._fail(label, table["name"], exc)

    def log(self, keys: list[str]) -> None:
        """Log the cells whose lines came back (and empty the list)."""
        while keys:
            key = keys.pop(0)
            images: dict[str, np.ndarray] = {}  # each grid drawn once for all trackers
            for entry in list(self.active):
                label, tracker, destination = entry
                try:  # a grid file that cannot be read costs the trackers, not the study
                    update, done = self._update(self.cells[key], label, destination, images)
                    if not done:
                        continue
                    with quiet():
                        tracker.log_cell(update)  # type: ignore[attr-defined]
                except Exception as exc:
                    self.active.remove(entry)
                    self._fail(label, tracker.name, exc)
                    continue
                with self.store.db:
                    self.store.db.executemany("INSERT OR REPLACE INTO tracked VALUES (?,?,?,?,?)",
                                              [(label, destination, key, what, step) for what, step in done])

    def close(self) -> None:
        for label, tracker, _ in self.active:
            try:
                with quiet():
                    tracker.close()  # type: ignore[attr-defined]
            except Exception as exc:
                self._fail(label, tracker.name, exc)
        self.active = []

    def _fail(self, label: str, name: str, exc: Exception) -> None:
        print(failure_line(label, str(self.study.registry.origin("tracker", name)), exc), file=sys.stderr, flush=True)

    def _update(self, cell: Cell, label: str, destination: str,
                images: dict[str, np.ndarray]) -> tuple[TrackedCell, list[tuple[str, int | None]]]:
        """What this tracker has not logged of the cell, and the `tracked` rows that record it once logged
        (images: the cell's grids drawn so far, by sampler)."""
        # imported here: plugin files import this module, and ablate.evaluate brings pandas
        from ablate.evaluate import samples_path

        db, key = self.store.db, cell.key
        logged = dict(db.execute("SELECT what, step FROM tracked WHERE tracker=? AND destination=? AND cell=?",
                                 (label, destination, key)).fetchall())
        status = (self.store.cell(key) or {}).get("status", "pending")
        update = TrackedCell(self.study.name, self.study.profile, key, cell.arm, cell.seed, axis_values(self.study, cell),
                             cell.config, self.plugins[key], status, first=PARAMS not in logged)
        done: list[tuple[str, int | None]] = [(PARAMS, None)] if update.first else []
        last = logged.get(LOSSES)
        update.losses = [(int(s), float(v)) for s, v in db.execute(
            "SELECT step, loss FROM losses WHERE cell=? AND step > ? ORDER BY step", (key, -1 if last is None else last))]
        if update.losses:
            done.append((LOSSES, update.losses[-1][0]))
        samplers, metrics = self.evaluated
        evals = [e for e in db.execute("SELECT sampler, metric, step, weights FROM evals WHERE cell=? ORDER BY step, sampler, "
                                       "metric, weights", (key,)).fetchall() if e[0] in samplers and e[1] in metrics]
        new = {e: what for e in evals if (what := "eval " + json.dumps(list(e))) not in logged}
        for sampler, metric, k, step, weights, value in db.execute(
                "SELECT sampler, metric, key, step, weights, value FROM metrics WHERE cell=? ORDER BY step, sampler, metric, "
                "weights, key", (key,)):
            if (sampler, metric, step, weights) in new and value is not None and math.isfinite(value):
                update.metrics.append(Point(sampler, metric, k, update.final_step if step == FINAL else step, weights, value))
        update.metrics.sort(key=lambda p: p.step)  # learning-curve points before the final ones
        done += [(what, None) for what in new.values()]
        for sampler in self.samplers:
            path = samples_path(self.runs_dir / key, sampler)
            if f"grid {sampler}" not in logged and path.exists():
                if sampler not in images:
                    images[sampler] = grid_image(torch.load(path, weights_only=True))
                update.grids[sampler] = images[sampler]
                done.append((f"grid {sampler}", None))
        return update, done

