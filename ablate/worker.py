"""Cells run in other processes (`local` with workers > 1, `ray`): the driver alone writes runs/ablate.db.

A worker trains and evaluates one cell into a store of its own, `<run dir>/cell.db` (the same Store,
so a killed worker resumes from its own rows and checkpoint), seeded by the driver with that cell's
rows from the main store. When the task returns, the driver copies the cell's rows into the main
store in one transaction, keyed like every other row (nothing twice), and deletes the cell store.
A task that still fails after the executor's retries is recorded as a failed cell with its reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.errors import StudyNote
from ablate.store import Store

CELL_STORE = "cell.db"
TABLES = ("cells", "losses", "evals", "metrics", "failures")


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell, picklable: it reloads the study from its file."""

    study_path: str
    profile: str | None
    overrides: tuple[str, ...]
    extra_plugins: tuple[str, ...]
    runs_dir: str
    key: str
    prefix: str  # "[i/n]"
    name: str  # "[i/n] arm seed s (key)"
    cwd: str  # the driver's working directory: relative paths in the study mean the same in the worker
    threads: int | None = None  # torch threads in the worker (None: its share of the cores, ablate.threads)


@dataclass(frozen=True)
class Done:
    """What a worker returns: the job and the cell's summary line."""

    job: CellJob
    line: str


@dataclass(frozen=True)
class Failed:
    """What a remote executor yields for a job that failed on every try."""

    job: CellJob
    reason: str


RemoteMap = Callable[[Callable[[CellJob], Done], Iterable[CellJob]], Iterator["Done | Failed"]]

_STUDIES: dict[tuple, Any] = {}  # a warm worker process reuses the study and the datasets it loaded
_DATASETS: dict[str, Any] = {}


def cell_store_path(runs_dir: str | Path, key: str) -> Path:
    return Path(runs_dir) / key / CELL_STORE


def run_job(job: CellJob) -> Done:
    """Worker side: run one cell into its own store; returns the cell's summary line."""
    import torch

    from ablate import runner
    from ablate.study import load_study
    from ablate.threads import choose

    torch.set_num_threads(choose(job.threads))  # per job: other runs may have started or ended meanwhile
    if Path(job.cwd).is_dir():
        os.chdir(job.cwd)
    spec = (job.study_path, job.profile, job.overrides, job.extra_plugins)
    if spec not in _STUDIES:
        with warnings.catch_warnings():  # the driver has shown the study's notes once
            warnings.simplefilter("ignore", StudyNote)
            _STUDIES[spec] = load_study(job.study_path, job.profile, list(job.overrides), list(job.extra_plugins))
    study = _STUDIES[spec]
    cell = next((c for c in study.cells if c.key == job.key), None)
    if cell is None:
        raise RuntimeError(f"cell {job.key} is not in this worker's copy of {job.study_path}: "
                           "the study file or its plugins differ between the driver and this machine")
    store = Store(cell_store_path(job.runs_dir, job.key))
    try:
        store.set_identities(*runner.eval_plugins(study))
        line = runner._run_cell(study, cell, store, Path(job.runs_dir), _DATASETS, False, job.prefix)
    finally:
        store.close()
    return Done(job, line)


def run_remote(executor_map: RemoteMap, study: Any, store: Store, runs_dir: Path, jobs_from: dict[str, Any],
               threads: int | None = None, settled: list[str] | None = None) -> Iterator[str]:
    """Driver side: skip finished cells, seed each cell's store, hand the rest to the executor and merge
    each result as it comes back; yields one summary line per cell.

    jobs_from: study_path, profile, overrides and extra_plugins of this run (what workers reload).
    settled: each cell's key is appended to it just before its line is yielded (its rows are in the store)."""
    settled = [] if settled is None else settled
    from ablate import runner

    total, jobs = len(study.cells), []
    for i, cell in enumerate(study.cells, 1):
        name = f"[{i}/{total}] {cell.arm} seed {cell.seed} ({cell.key})"
        path = cell_store_path(runs_dir, cell.key)
        if path.exists():  # left by a killed driver: keep what its worker finished
            merge_cell_store(store, path, cell.key, current_only=True)
        state = store.cell(cell.key) or {}
        if state.get("status") == "failed":
            settled.append(cell.key)
            yield f"{name}: failed earlier ({state.get('reason')}); not retried"
            continue
        if state.get("status") == "done" and runner._all_evaluated(study, cell, store, runs_dir, _DATASETS):
            settled.append(cell.key)
            yield f"{name}: already done"
            continue
        seed_cell_store(store, path, cell.key)
        jobs.append(CellJob(runs_dir=str(runs_dir.resolve()), key=cell.key, prefix=f"[{i}/{total}]", name=name,
                            cwd=os.getcwd(), threads=threads, **jobs_from))
    for outcome in executor_map(run_job, jobs):
        job = outcome.job
        path = cell_store_path(runs_dir, job.key)
        if path.exists():  # a failed cell keeps the losses and results it stored before failing
            merge_cell_store(store, path, job.key)
        settled.append(job.key)
        if isinstance(outcome, Failed):
            store.update_cell(job.key, status="failed", reason=outcome.reason)
            yield f"{job.name}: FAILED ({outcome.reason})"
        else:
            yield outcome.line


def seed_cell_store(store: Store, path: Path, key: str) -> None:
    """A fresh cell store holding the main store's rows of this cell (its progress and finished results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)
    Store(path).close()
    _copy(store, path, key, "main", "cell", TABLES, replace=False)


def merge_cell_store(store: Store, path: Path, key: str, current_only: bool = False) -> None:
    """Copy a cell store's rows of `key` into the main store (one transaction), then delete it.

    The worker's cell row (status, step, seconds) replaces the driver's. current_only: drop evaluations
    made by other plugin code than this run's (a cell store left by a killed run may predate a change)."""
    stale: list[tuple[str, str]] = []
    if current_only:
        with _attached(store, path):
            rows = store.db.execute("SELECT DISTINCT sampler, metric, plugins FROM cell.evals WHERE cell=?", (key,)).fetchall()
        stale = [(s, m) for s, m, plugins in rows if store.eval_stale(s, m, plugins)]
    _copy(store, path, key, "cell", "main", TABLES, replace=True, exclude=stale)
    _remove(path)


def _copy(store: Store, path: Path, key: str, src: str, dst: str, tables: tuple[str, ...], replace: bool,
          exclude: list[tuple[str, str]] = ()) -> None:
    """Copy the rows of cell `key` from schema src to dst in one transaction, leaving out the
    evaluations (sampler, metric) in `exclude`."""
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    with _attached(store, path), store.db:
        store.db.execute("BEGIN")
        for table in tables:  # by column name: either store may be older and lack a column (or the table)
            cols = ", ".join(c for c in store._columns(table, src) if c in store._columns(table, dst))
            if not cols:
                continue
            where, params = ("key=?" if table == "cells" else "cell=?"), [key]
            if table in ("evals", "metrics", "failures"):
                for pair in exclude:
                    where += " AND NOT (sampler=? AND metric=?)"
                    params += pair
            if table == "failures" and replace:  # the cell store, seeded with these rows, knows which still fail
                store.db.execute(f"DELETE FROM {dst}.failures WHERE {where}", params)
            store.db.execute(f"{verb} INTO {dst}.{table} ({cols}) SELECT {cols} FROM {src}.{table} WHERE {where}", params)


class _attached:
    """ATTACH the cell store as schema `cell` for the length of a block."""

    def __init__(self, store: Store, path: Path) -> None:
        self.store, self.path = store, path

    def __enter__(self) -> None:
        self.store.db.execute("ATTACH DATABASE ? AS cell", (str(self.path),))

    def __exit__(self, *exc: object) -> None:
        self.store.db.execute("DETACH DATABASE cell")


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)

