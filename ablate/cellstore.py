"""A cell's own store, `<run dir>/cell.db`: seeded by the driver with the cell's rows from the main
store before a worker runs it (the same Store, so a killed worker resumes from its own rows and
checkpoint), and merged back into the main store in one transaction when the job returns, keyed like
every other row (nothing twice).
"""

from __future__ import annotations

from pathlib import Path

from ablate.store import Store

TABLES = ("cells", "losses", "evals", "metrics", "failures")


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

