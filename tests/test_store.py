"""The store's contract: a keyed row written twice is one row holding the latest value; a cell
keeps what it was first stored with (a kill inside a write: tests/test_faults.py)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from ablate.store import FINAL, Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ablate.db")
    yield s
    s.close()


def rows(store: Store, sql: str) -> list[tuple]:
    return store.db.execute(sql).fetchall()


def test_the_same_metric_written_twice_is_one_row_with_the_latest_value(store):
    store.add_metric("c", "ancestral", "fid", {"fid": 3.0, "kid": 0.5}, 100, 1000, 2.0)
    store.add_metric("c", "ancestral", "fid", {"fid": 4.0, "kid": 0.5}, 100, 1000, 2.0)
    assert rows(store, "SELECT key, value, step, weights FROM metrics ORDER BY key") == [
        ("fid", 4.0, FINAL, "ema"), ("kid", 0.5, FINAL, "ema")]
    assert rows(store, "SELECT COUNT(*) FROM evals") == [(1,)]
    # another step or other weights are other rows, not replacements
    store.add_metric("c", "ancestral", "fid", {"fid": 9.0}, 100, 1000, 2.0, step=500)
    store.add_metric("c", "ancestral", "fid", {"fid": 8.0}, 100, 1000, 2.0, weights="raw")
    assert sorted(rows(store, "SELECT step, weights, value FROM metrics WHERE key='fid'")) == [
        (FINAL, "ema", 4.0), (FINAL, "raw", 8.0), (500, "ema", 9.0)]


def test_losses_written_twice_are_one_row_each_with_the_latest_value(store):
    store.add_losses("c", [(10, 1.0), (20, 0.5)])
    store.add_losses("c", [(20, 0.25), (30, 0.125)])
    assert rows(store, "SELECT step, loss FROM losses ORDER BY step") == [(10, 1.0), (20, 0.25), (30, 0.125)]


def test_a_cell_added_twice_keeps_its_first_config_and_identity(store):
    store.add_cell(1, "k", {"lr": 1}, "arm", 0, {"model/mlp": "built-in (ablate 1)"})
    store.add_cell(1, "k", {"lr": 2}, "arm", 0, {"model/mlp": "built-in (ablate 2)"})
    assert rows(store, "SELECT config, plugins FROM cells") == [('{"lr": 1}', '{"model/mlp": "built-in (ablate 1)"}')]
    assert rows(store, "SELECT COUNT(*) FROM run_cells") == [(1,)]


def test_an_older_store_without_identities_gains_the_column_and_merges(tmp_path):
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as db, db:
        db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                         "INSERT INTO meta VALUES ('schema_version', '2');"
                         "CREATE TABLE cells (key TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',"
                         " reason TEXT, step INTEGER NOT NULL DEFAULT 0, train_seconds REAL NOT NULL DEFAULT 0,"
                         " num_params INTEGER, clipped_steps INTEGER NOT NULL DEFAULT 0, updated REAL);"
                         "INSERT INTO cells (key, config, status, step) VALUES ('k', '{}', 'done', 5);")
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db, db:
        db.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, study TEXT, profile TEXT, study_file TEXT, started REAL,"
                         " finished REAL, hardware TEXT, plugins TEXT, settings TEXT);"
                         "CREATE TABLE run_cells (run INTEGER, cell TEXT, arm TEXT, seed INTEGER);"
                         "CREATE TABLE cells (key TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',"
                         " reason TEXT, step INTEGER NOT NULL DEFAULT 0, train_seconds REAL NOT NULL DEFAULT 0,"
                         " num_params INTEGER, clipped_steps INTEGER NOT NULL DEFAULT 0, updated REAL);"
                         "INSERT INTO cells (key, config, status, step) VALUES ('m', '{}', 'done', 7);"
                         "CREATE TABLE losses (cell TEXT, step INTEGER, loss REAL);"
                         "CREATE TABLE evals (cell TEXT, sampler TEXT, metric TEXT, step INTEGER, weights TEXT, seconds REAL, finished REAL);"
                         "CREATE TABLE metrics (cell TEXT, sampler TEXT, metric TEXT, key TEXT, step INTEGER, weights TEXT,"
                         " value REAL, num_samples INTEGER, nfe INTEGER, seconds REAL);")
    store = Store(old)
    try:
        assert rows(store, "SELECT key, status, plugins FROM cells") == [("k", "done", None)]
        # recorded without identities: stale (never silently reused), not adopted
        assert store.stale_cells({"k": {"model/mlp": "built-in"}}) == {"k": None}
        store.merge_from(other)
        assert sorted(rows(store, "SELECT key, step, plugins FROM cells")) == [("k", 5, None), ("m", 7, None)]
    finally:
        store.close()
