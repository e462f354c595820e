"""The results store: one SQLite file (WAL) that survives interruption.

Rows are keyed so that re-running finished work replaces nothing and duplicates nothing:
cells by the hash of their resolved config, losses by (cell, step), metric rows by
(cell, sampler, metric, key, step, weights). A keyed row written again (a resumed cell recomputes
the losses after its last checkpoint, with equal values) holds the latest value, never a second
row; a cell keeps the config and plugin identities it was first stored with. A metric's rows and its `done` mark go in one
transaction. `step` is the training step of the evaluated weights (-1: the final ones) and
`weights` says which ("ema" or "raw"), so learning curves sit beside the final numbers.

Every cell and every evaluation also records the code identity of the plugins it rests on
(`plugins`: JSON {"kind/name": identity}), so a rerun can tell results computed by code that
has since changed (`stale_cells`, `stale_evals`: per result, by the plugins that result names, see
ablate.identity) and recompute them (`forget`). Every change is one SQLite transaction.

A unit of work that failed (ablate.faults: an evaluation, or a cell's own work) has a row in
`failures`, keyed like `evals`, until it succeeds: storing the unit's metric deletes it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.identity import changes
from ablate.rowlabels import CELL, FINAL, LADDER, NO_SAMPLER, REAL_DATA, REFERENCE_ROWS
from ablate.store_reads import Reads

if TYPE_CHECKING:
    from ablate.faults import Failure

__all__ = ["CELL", "FINAL", "LADDER", "NO_SAMPLER", "REAL_DATA", "REFERENCE_ROWS", "SCHEMA_VERSION", "Store"]

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, profile TEXT, study_file TEXT,
    started REAL NOT NULL, finished REAL, hardware TEXT, plugins TEXT, settings TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT, step INTEGER NOT NULL DEFAULT 0, train_seconds REAL NOT NULL DEFAULT 0,
    num_params INTEGER, clipped_steps INTEGER NOT NULL DEFAULT 0, trivial_loss REAL, updated REAL, plugins TEXT
);
CREATE TABLE IF NOT EXISTS run_cells (
    run INTEGER NOT NULL, cell TEXT NOT NULL, arm TEXT NOT NULL, seed INTEGER NOT NULL, PRIMARY KEY (run, cell)
);
CREATE TABLE IF NOT EXISTS losses (cell TEXT NOT NULL, step INTEGER NOT NULL, loss REAL NOT NULL, PRIMARY KEY (cell, step));
CREATE TABLE IF NOT EXISTS evals (
    cell TEXT NOT NULL, sampler TEXT NOT NULL, metric TEXT NOT NULL, step INTEGER NOT NULL, weights TEXT NOT NULL,
    seconds REAL, finished REAL, plugins TEXT,
    PRIMARY KEY (cell, sampler, metric, step, weights)
);
CREATE TABLE IF NOT EXISTS metrics (
    cell TEXT NOT NULL, sampler TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,
    weights TEXT NOT NULL, value REAL, num_samples INTEGER, nfe INTEGER, seconds REAL,
    PRIMARY KEY (cell, sampler, metric, key, step, weights)
);
CREATE TABLE IF NOT EXISTS failures (
    cell TEXT NOT NULL, sampler TEXT NOT NULL, metric TEXT NOT NULL, step INTEGER NOT NULL, weights TEXT NOT NULL,
    plugin TEXT NOT NULL, origin TEXT NOT NULL, error TEXT NOT NULL, traceback TEXT, finished REAL,
    PRIMARY KEY (cell, sampler, metric, step, weights)
);
"""


def _identity(plugins: dict[str, str] | None) -> str | None:
    return None if plugins is None else json.dumps(plugins, sort_keys=True)


def _stale(recorded: str | None, current: dict[str, str]) -> bool:
    """A result recorded without identities is stale; one with them, when a plugin it names has other code now."""
    return recorded is None or bool(changes(json.loads(recorded), current))


class Store(Reads):
    """The results store: the schema, the writes (each one transaction) and the staleness of stored results;
    the read queries are `Reads` (ablate.store_reads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        for table in ("cells", "evals"):  # stores written before plugin identities were recorded
            if "plugins" not in self._columns(table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN plugins TEXT")
        self.identities: dict[str, dict[str, dict[str, str]]] = {"sampler": {}, "metric": {}}
        version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) != SCHEMA_VERSION:
            from ablate.errors import AblateError

            raise AblateError(f"results store has schema version {version[0]}, this ablate writes {SCHEMA_VERSION}; "
                              "use another --runs-dir", file=str(self.path))

    def close(self) -> None:
        self.db.close()

    def _columns(self, table: str, schema: str = "main") -> list[str]:
        return [row[1] for row in self.db.execute(f"PRAGMA {schema}.table_info({table})")]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """All of it or none of it: a kill or a full disk mid-way leaves the store as it was."""
        with self.db:
            self.db.execute("BEGIN")
            yield

    # runs
    def start_run(self, study: str, profile: str | None, study_file: str, hardware: dict, plugins: dict, settings: dict) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (study, profile, study_file, started, hardware, plugins, settings) VALUES (?,?,?,?,?,?,?)",
            (study, profile or "", study_file, time.time(), json.dumps(hardware), json.dumps(plugins), json.dumps(settings)),
        )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        self.db.execute("UPDATE runs SET finished=? WHERE id=?", (time.time(), run_id))

    # cells
    def add_cell(self, run_id: int, key: str, config: dict, arm: str, seed: int, plugins: dict[str, str] | None = None) -> None:
        """A new cell records the identity of its training plugins; an existing one keeps what it recorded."""
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO cells (key, config, updated, plugins) VALUES (?,?,?,?)",
                            (key, json.dumps(config, sort_keys=True), time.time(), _identity(plugins)))
            self.db.execute("INSERT OR REPLACE INTO run_cells VALUES (?,?,?,?)", (run_id, key, arm, seed))

    def cell(self, key: str) -> dict[str, Any] | None:
        cols = ("status", "reason", "step", "train_seconds", "clipped_steps")
        row = self.db.execute(f"SELECT {', '.join(cols)} FROM cells WHERE key=?", (key,)).fetchone()
        return None if row is None else dict(zip(cols, row, strict=True))

    def update_cell(self, key: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE cells SET {cols}, updated=? WHERE key=?", (*fields.values(), time.time(), key))

    def add_losses(self, key: str, rows: list[tuple[int, float]]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO losses VALUES (?,?,?)", [(key, s, v) for s, v in rows])

    # plugin identities
    def set_identities(self, samplers: dict[str, dict[str, str]], metrics: dict[str, dict[str, str]]) -> None:
        """The plugin identities behind each sampler and metric label of this run: `add_metric` records
        them with every evaluation, whoever calls it."""
        self.identities = {"sampler": samplers, "metric": metrics}

    def eval_identity(self, sampler: str, metric: str) -> str | None:
        if metric not in self.identities["metric"]:
            return None
        return _identity({**self.identities["sampler"].get(sampler, {}), **self.identities["metric"][metric]})

    def eval_stale(self, sampler: str, metric: str, recorded: str | None) -> bool:
        """Was a stored evaluation (its recorded identity) computed by other code than this run's? Only this
        run's sampler and metric labels are judged: a shared cell also holds other studies' evaluations."""
        if metric not in self.identities["metric"] or sampler not in {*self.identities["sampler"], NO_SAMPLER, *REFERENCE_ROWS}:
            return False
        return _stale(recorded, json.loads(self.eval_identity(sampler, metric) or "{}"))

    def stale_cells(self, current: dict[str, dict[str, str]]) -> dict[str, dict[str, str] | None]:
        """Cells (key -> current identity) whose stored work was done by other plugin code: key -> the
        identity they recorded (None: recorded without one). A cell with no work yet takes the current one."""
        stale = {}
        for key, identity in current.items():
            row = self.db.execute("SELECT plugins, status != 'pending' OR step > 0 OR EXISTS (SELECT 1 FROM losses "
                                  "WHERE cell=?) OR EXISTS (SELECT 1 FROM evals WHERE cell=?) FROM cells WHERE key=?",
                                  (key, key, key)).fetchone()
            if row is None or not _stale(row[0], identity):
                continue
            if row[1]:
                stale[key] = json.loads(row[0]) if row[0] else None
            else:
                self.update_cell(key, plugins=_identity(identity))
        return stale

    def stale_evals(self, cells: list[str]) -> list[tuple[str, str, str, dict[str, str] | None]]:
        """(cell, sampler, metric, recorded identity) of the evaluations of `cells`, by this run's sampler
        and metric labels, that were computed by other plugin code than `set_identities` names."""
        stale: dict[tuple[str, str, str], dict[str, str] | None] = {}
        for key in cells:
            for sampler, metric, recorded in self.db.execute(
                    "SELECT DISTINCT sampler, metric, plugins FROM evals WHERE cell=? ORDER BY 1, 2", (key,)).fetchall():
                if self.eval_stale(sampler, metric, recorded):
                    stale.setdefault((key, sampler, metric), json.loads(recorded) if recorded else None)
        return [(*where, recorded) for where, recorded in stale.items()]

    def forget(self, cells: dict[str, dict[str, str]], evals: list[tuple[str, str, str]]) -> None:
        """Delete stale results in one transaction: each cell (key -> its new identity) starts again from
        nothing, each (cell, sampler, metric) evaluation is to be redone."""
        with self._transaction():
            for key, identity in cells.items():
                for table in ("losses", "evals", "metrics"):
                    self.db.execute(f"DELETE FROM {table} WHERE cell=?", (key,))
                self.db.execute("UPDATE cells SET status='pending', reason=NULL, step=0, train_seconds=0, num_params=NULL, "
                                "clipped_steps=0, plugins=?, updated=? WHERE key=?", (_identity(identity), time.time(), key))
            for key, sampler, metric in evals:
                for table in ("evals", "metrics"):
                    self.db.execute(f"DELETE FROM {table} WHERE cell=? AND sampler=? AND metric=?", (key, sampler, metric))

    # evaluation
    def eval_done(self, key: str, sampler: str, metric: str, step: int = FINAL, weights: str = "ema") -> bool:
        return self.db.execute("SELECT 1 FROM evals WHERE cell=? AND sampler=? AND metric=? AND step=? AND weights=?",
                               (key, sampler, metric, step, weights)).fetchone() is not None

    def add_metric(self, key: str, sampler: str, metric: str, values: dict[str, float], num_samples: int,
                   nfe: int | None, seconds: float, step: int = FINAL, weights: str = "ema") -> None:
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(key, sampler, metric, k, step, weights, v, num_samples, nfe, seconds) for k, v in values.items()],
            )
            self.db.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?,?,?,?,?,?)",
                            (key, sampler, metric, step, weights, seconds, time.time(), self.eval_identity(sampler, metric)))
            self.db.execute("DELETE FROM failures WHERE cell=? AND sampler=? AND metric=? AND step=? AND weights=?",
                            (key, sampler, metric, step, weights))

    # failures (ablate.faults): a unit that failed has a row here until it succeeds
    def add_failure(self, key: str, sampler: str, metric: str, failure: Failure, step: int = FINAL,
                    weights: str = "ema") -> None:
        self.db.execute("INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (key, sampler, metric, step, weights, failure.plugin, failure.origin, failure.error,
                         failure.traceback, time.time()))

    def clear_failure(self, key: str, sampler: str = CELL, metric: str = CELL, step: int = FINAL, weights: str = "ema") -> None:
        self.db.execute("DELETE FROM failures WHERE cell=? AND sampler=? AND metric=? AND step=? AND weights=?",
                        (key, sampler, metric, step, weights))

    def failures(self, key: str) -> list[tuple[str, str, int, str]]:
        """The failed units (sampler, metric, step, weights) of a cell."""
        return [tuple(r) for r in self.db.execute("SELECT sampler, metric, step, weights FROM failures WHERE cell=? "
                                                  "ORDER BY step, weights, sampler, metric", (key,))]

    def _settle_failures(self) -> None:
        """Drop the failure of every evaluation that is stored (merged from another store)."""
        self.db.execute("DELETE FROM failures WHERE EXISTS (SELECT 1 FROM evals e WHERE e.cell = failures.cell AND "
                        "e.sampler = failures.sampler AND e.metric = failures.metric AND e.step = failures.step AND "
                        "e.weights = failures.weights)")

    def merge_from(self, other: str | Path) -> int:
        """Copy another store's runs and results into this one (e.g. a GPU machine's runs/ablate.db).
        Cells and results are keyed, so merging twice adds nothing; returns the number of runs added."""
        self.db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            with self._transaction():
                added = 0
                mine = {tuple(r) for r in self.db.execute("SELECT study, profile, started FROM runs")}
                cols = "study, profile, study_file, started, finished, hardware, plugins, settings"
                for row in self.db.execute(f"SELECT id, {cols} FROM other.runs ORDER BY id").fetchall():
                    if (row[1], row[2], row[4]) in mine:
                        continue
                    new_id = self.db.execute(f"INSERT INTO runs ({cols}) VALUES (?,?,?,?,?,?,?,?)", row[1:]).lastrowid
                    self.db.execute("INSERT INTO run_cells SELECT ?, cell, arm, seed FROM other.run_cells WHERE run=?", (new_id, row[0]))
                    added += 1
                for table in ("cells", "losses", "evals", "metrics", "failures"):  # by name: the other store may lack a column
                    cols = ", ".join(c for c in self._columns(table) if c in self._columns(table, "other"))
                    if cols:  # (or the whole table)
                        self.db.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM other.{table}")
                self._settle_failures()
            return added
        finally:
            self.db.execute("DETACH DATABASE other")
