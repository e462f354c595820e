"""`ablate export`: a tiny study's results as CSV and parquet, read back with pandas and compared with the
store's rows read by plain SQL; the arm's axes as columns; one `error:` line for what cannot be exported."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing

import pandas as pd
import pytest

from ablate.cli import main
from ablate.export import arm_axes
from studies import TINY_EVAL, merged, write_study

TIDY = merged(TINY_EVAL, {"study": {"name": "tidy_tiny"}, "train": {"steps": 20}, "eval": {"at_steps": [10]},
                          "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}], "train.lr": [1e-3, 3e-3]},
                          "profiles": {"quick": {"train": {"steps": 10}}}})


COLUMNS = ["study", "profile", "arm", "target", "lr", "seed", "sampler", "metric", "key", "value", "weights",
           "train_step", "final", "nfe", "num_samples", "seconds", "cell", "plugins"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    write_study(folder, "tidy.toml", base=TIDY)
    write_study(folder, "untrained.toml", base=TIDY, study={"name": "untrained"}, sampler=None, metric=None, profiles=None)
    for args in (["tidy.toml"], ["tidy.toml", "--profile", "quick"], ["untrained.toml"]):
        assert main(["run", str(folder / args[0]), *args[1:], "--runs-dir", str(folder / "runs")]) == 0
    return folder


def stored(runs) -> set[tuple]:
    """The metric rows of the store by plain SQL, final steps as the cell's trained step."""
    with closing(sqlite3.connect(runs / "runs" / "ablate.db")) as db:
        rows = db.execute("SELECT m.cell, m.sampler, m.metric, m.key, m.weights, CASE m.step WHEN -1 THEN c.step "
                          "ELSE m.step END, m.value FROM metrics m JOIN cells c ON c.key = m.cell "
                          "JOIN run_cells rc ON rc.cell = m.cell JOIN runs r ON r.id = rc.run "
                          "WHERE r.study = 'tidy_tiny' AND r.profile = ''").fetchall()
    return set(rows)


def test_csv_holds_every_stored_value_with_its_axes(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    assert main(["export", "tidy.toml", "--profile", "default", "--format", "csv", "--runs-dir", "runs"]) == 0
    assert "wrote" in capsys.readouterr().out
    frame = pd.read_csv(runs / "tidy_tiny-default.csv")
    assert list(frame.columns) == COLUMNS
    got = set(zip(frame.cell, frame.sampler, frame.metric, frame.key, frame.weights, frame.train_step, frame.value,
                  strict=True))
    assert got == stored(runs)
    assert set(frame.train_step) == {10, 20} and set(frame[frame.final].train_step) == {20}
    assert (frame.profile == "default").all() and (frame.study == "tidy_tiny").all()
    with closing(sqlite3.connect(runs / "runs" / "ablate.db")) as db:
        configs = {k: json.loads(c) for k, c in db.execute("SELECT key, config FROM cells")}
    for row in frame.drop_duplicates("cell").itertuples():
        assert row.target == configs[row.cell]["target"]["name"]
        assert row.lr == configs[row.cell]["train"]["lr"]
        assert row.arm == f"{row.target} + lr={row.lr}"
    sampled = frame[frame.sampler == "ancestral"].iloc[0]
    plugins = json.loads(sampled.plugins)
    assert {"model/mlp", "target/" + sampled.target, "sampler/ancestral", "metric/gmm_fit"} <= set(plugins)
    assert sampled.nfe == 50 and frame[frame.sampler == "ddim(steps=5)"].nfe.eq(5).all()


def test_parquet_reads_back_in_one_line_and_spans_profiles(runs, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(runs)
    assert main(["export", "tidy_tiny", "--format", "parquet", "--runs-dir", "runs", "--out", "out/all.parquet"]) == 0
    frame = pd.read_parquet(runs / "out" / "all.parquet")
    assert list(frame.columns) == COLUMNS
    assert set(frame.profile) == {"default", "quick"}
    assert frame.lr.dtype.kind == "f" and frame.train_step.dtype.name == "Int64"
    default = frame[frame.profile == "default"]
    assert set(zip(default.cell, default.sampler, default.metric, default.key, default.weights, default.train_step,
                   default.value, strict=True)) == stored(runs)
    assert set(frame[frame.profile == "quick"].train_step) == {10}


def test_parquet_without_pyarrow_says_what_to_install(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` sees where it is not installed
    assert main(["export", "tidy_tiny", "--format", "parquet", "--runs-dir", str(runs / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "pip install 'ablate[parquet]'" in err


@pytest.mark.parametrize(("args", "expected"), [
    (["nope"], "no runs of study 'nope'"),
    (["untrained"], "has no results"),
    (["tidy_tiny", "--profile", "gpu"], "no runs with profile 'gpu'"),
    (["missing.toml"], "study file not found"),
])
def test_errors_are_one_line(runs, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(runs)
    assert main(["export", *args, "--format", "csv", "--runs-dir", "runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and expected in err
    assert main(["export", "tidy_tiny", "--format", "csv", "--runs-dir", "elsewhere"]) == 2
    assert "no results store" in capsys.readouterr().err


def test_arm_axes_by_section_and_dotted_key():
    config = {"target": {"name": "x0"}, "schedule": {"name": "cosine", "T": 500}, "model": {"name": "mlp"}}
    assert arm_axes("x0 + lr=0.0002 + cosine(T=500)", config) == {"target": "x0", "lr": "0.0002",
                                                                   "schedule": "cosine(T=500)"}
    assert arm_axes("default", config) == {}
