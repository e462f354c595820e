"""Fault isolation: a plugin that raises or returns anything but finite floats costs only its own units.

The plugins are real local files (tests/data/broken_plugins.py, copied so that a test can "fix" its copy
by editing it, as an author would); the studies run through the CLI on gmm2d (the exact oracle where no
training is needed, a tiny MLP where it is). The validation rule is tested against values whose validity
the strategies know by construction, not by asking the code.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_faults import ablate_run

from ablate.faults import BadResult, Failure, check_result
from ablate.report import write_reports
from ablate.store import CELL, FINAL, REAL_DATA, Store
from studies import DATA, assert_no_duplicates, metric_values, query, run, write_study

# --- the rule: a non-empty mapping of str keys to finite floats -------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
GOOD = st.one_of(  # numbers that convert to a finite float
    FINITE, st.integers(-10**12, 10**12), st.floats(width=32, allow_nan=False, allow_infinity=False).map(np.float32),
    st.integers(-10**6, 10**6).map(np.int64), FINITE.map(lambda x: torch.tensor(x, dtype=torch.float64)),
)
BAD = st.one_of(  # anything else a metric might put in its mapping
    st.sampled_from([math.nan, math.inf, -math.inf]), st.sampled_from([np.float32("nan"), np.float64("-inf")]),
    st.just(torch.tensor(math.nan)), st.booleans(), st.just(np.bool_(True)), st.just(torch.tensor(True)),
    st.text(), st.none(), st.lists(FINITE, max_size=3), st.just(torch.ones(2)), st.just(torch.zeros(1, 1)),
    st.complex_numbers(allow_nan=False, allow_infinity=False), st.just(10**400),
)
KEYS = st.text(max_size=8)
TAGGED = st.one_of(GOOD.map(lambda v: (v, True)), BAD.map(lambda v: (v, False)))


def _mapping(items: dict) -> tuple[dict, bool]:
    return {k: v for k, (v, _) in items.items()}, bool(items) and all(ok for _, ok in items.values())


RESULTS = st.one_of(  # (what a metric returns, whether it is a result to store)
    st.dictionaries(KEYS, TAGGED, max_size=5).map(_mapping),
    st.dictionaries(st.one_of(st.integers(), st.none(), st.tuples(KEYS), st.binary(max_size=3)), GOOD, min_size=1)
    .map(lambda d: (d, False)),  # non-str keys
    st.tuples(st.dictionaries(KEYS, GOOD, max_size=3), st.integers(), GOOD).map(lambda t: ({**t[0], t[1]: t[2]}, False)),
    BAD.map(lambda v: (v, False)), GOOD.map(lambda v: (v, False)),  # a bare number, text, None, a list, a tensor
    st.lists(st.tuples(KEYS, FINITE), max_size=3).map(lambda v: (v, False)),  # pairs, not a mapping
)


@settings(max_examples=400, deadline=None)
@given(RESULTS)
def test_a_metric_return_is_stored_only_when_it_is_a_mapping_of_str_to_finite_floats(case):
    value, ok = case
    if ok:
        assert check_result(value) == {k: float(v) for k, v in value.items()}
        assert all(type(v) is float for v in check_result(value).values())
    else:
        with pytest.raises(BadResult):  # any other exception would be a crash
            check_result(value)


# --- through `ablate run` ---------------------------------------------------------------------------------

ORACLE = {"model": {"name": "gmm_oracle"}, "eval": {"grid_samples": 0}}  # nothing to train
SAMPLERS = [{"name": "raising"}, {"name": "ddim", "steps": 5}]
DDIM = [{"name": "ddim", "steps": 5}]
GOOD_METRIC = {"name": "gmm_fit", "num_samples": 100}
NAN_METRIC = {"name": "nan_spread", "num_samples": 100}


def isolation_study(folder: Path, name: str = "isolation", seeds: tuple[int, ...] = (0, 1), **tables) -> Path:
    """A gmm2d study in `folder` beside a fresh copy of the broken plugins; `tables` give the rest."""
    return write_study(folder, base={}, plugin_files={"broken_plugins.py": (DATA / "broken_plugins.py").read_text()},
                       study={"name": name, "seeds": list(seeds)}, data={"name": "gmm2d", "n_train": 500, "n_test": 200},
                       **tables)


def fix_plugins(tmp_path: Path) -> None:
    plugin = tmp_path / "broken_plugins.py"
    plugin.write_text(plugin.read_text().replace("\nBROKEN = True\n", "\nBROKEN = False\n"))


def run_here(study: Path, runs: Path, capsys) -> tuple[int, str, str]:
    """`ablate run` in this process (a plugin file is imported once per process: a rerun after editing
    it goes through `rerun`, a fresh process, like the user's next command)."""
    code = run(study, runs)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def rerun(study: Path, runs: Path) -> tuple[int, str]:
    proc = ablate_run(study, runs)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def failures(runs: Path) -> list[tuple]:
    return sorted(query(runs, "SELECT cell, sampler, metric, step, weights, plugin, origin, error FROM failures"))


def test_a_raising_sampler_and_a_nan_metric_cost_only_their_own_results_and_a_rerun_retries_them(tmp_path, capsys):
    study = isolation_study(tmp_path, **ORACLE, sampler=SAMPLERS, metric=[GOOD_METRIC, NAN_METRIC])
    runs = tmp_path / "runs"
    code, out, _ = run_here(study, runs, capsys)
    assert code == 1
    origin = str((tmp_path / "broken_plugins.py").resolve())
    cells = sorted(k for (k,) in query(runs, "SELECT key FROM cells"))
    sampler_error = ("sampler/raising", origin, "ValueError: boom from the sampler")
    nan_error = ("metric/nan_spread", origin, "BadResult: returned 'spread': float nan, not a finite float")
    gmm, nan = "gmm_fit(num_samples=100)", "nan_spread(num_samples=100)"
    assert failures(runs) == sorted(
        [(c, "raising", m, FINAL, "ema", *sampler_error) for c in cells for m in (gmm, nan)]
        + [(c, s, nan, FINAL, "ema", *nan_error) for c in cells for s in ("ddim(steps=5)", REAL_DATA)])
    # the summary: one line per failed unit, naming arm, seed, sampler, metric, plugin, origin and error
    assert "8 unit(s) of work failed" in out
    for seed in (0, 1):
        assert f"FAILED default seed {seed}, sampler raising, metric {gmm}: sampler/raising ({origin}): " \
               "ValueError: boom from the sampler" in out
        assert f"FAILED default seed {seed}, metric {nan} on {REAL_DATA}: metric/nan_spread ({origin}): BadResult" in out
    # every good result is kept, and equals a study that never had the broken plugins
    clean = isolation_study(tmp_path / "clean", **ORACLE, sampler=DDIM, metric=[GOOD_METRIC])
    assert run_here(clean, tmp_path / "clean_runs", capsys)[0] == 0
    assert metric_values(runs) == metric_values(tmp_path / "clean_runs")
    assert query(runs, "SELECT COUNT(*) FROM metrics WHERE value IS NULL OR value != value") == [(0,)]  # no NaN stored

    write_reports([str(study)], runs_dir=runs, out_dir=tmp_path / "reports")
    report = (tmp_path / "reports" / "isolation" / "README.md").read_text()
    assert "### Failed evaluations" in report
    assert f"| default | 1 | raising | {gmm} | sampler/raising ({origin}) | ValueError: boom from the sampler |" in report

    fix_plugins(tmp_path)
    good = metric_values(runs)
    code, out = rerun(study, runs)
    assert code == 0 and "FAILED" not in out
    assert failures(runs) == []
    after = metric_values(runs)
    assert set(good) < set(after)  # the good results untouched, the retried ones added
    assert {(s, m) for _, s, m, *_ in after} == {(s, m) for s in ("raising", "ddim(steps=5)", REAL_DATA) for m in (gmm, nan)}
    assert_no_duplicates(runs)
    write_reports([str(study)], runs_dir=runs, out_dir=tmp_path / "reports")
    assert "Failed evaluations" not in (tmp_path / "reports" / "isolation" / "README.md").read_text()


TRAINED = {"model": {"name": "mlp", "hidden": 16, "depth": 2}, "schedule": {"name": "linear", "T": 50},
           "train": {"steps": 20, "batch_size": 64, "warmup": 5, "checkpoint_every": 10, "log_every": 5},
           "eval": {"grid_samples": 0, "at_steps": [10]},
           "grid": {"weighting": [{"name": "simple"}, {"name": "raising_weights"}]},
           "metric": [{"name": "broken_diagnostic", "num_samples": 100},
                      {"name": "x0_error_by_t", "num_samples": 100, "timesteps": [0, 25, 49]}]}


def test_a_cell_whose_plugin_raises_and_a_failed_learning_curve_are_recorded_and_retried(tmp_path, capsys):
    study = isolation_study(tmp_path, "isolation_train", (0,), **TRAINED)
    runs = tmp_path / "runs"
    code, out, _ = run_here(study, runs, capsys)
    assert code == 1
    origin = str((tmp_path / "broken_plugins.py").resolve())
    cells = dict(query(runs, "SELECT arm, cell FROM run_cells"))
    diag = ("metric/broken_diagnostic", origin, "RuntimeError: second line of the message")  # the error's last line
    assert failures(runs) == sorted([
        (cells["raising_weights"], CELL, CELL, FINAL, "ema", "weighting/raising_weights", origin, "RuntimeError: boom from the weighting"),
        (cells["simple"], "-", "broken_diagnostic(num_samples=100)", 10, "ema", *diag),
        (cells["simple"], "-", "broken_diagnostic(num_samples=100)", FINAL, "ema", *diag)])
    assert "FAILED raising_weights seed 0, the cell (data, plugins, training): weighting/raising_weights" in out
    (trace,) = query(runs, "SELECT traceback FROM failures WHERE sampler = ?", (CELL,))[0]
    assert "Traceback" in trace and "boom from the weighting" in trace  # kept for whoever debugs the plugin
    # the other cell trained and its good metric is stored at both steps; the failed cell may be retried
    assert query(runs, "SELECT DISTINCT step FROM metrics WHERE cell = ? AND metric LIKE 'x0_error_by_t%' ORDER BY 1",
                 (cells["simple"],)) == [(FINAL,), (10,)]
    assert dict(query(runs, "SELECT key, status FROM cells"))[cells["raising_weights"]] == "pending"
    assert (runs / cells["simple"] / "ema-step10.pt").exists()  # step 10's weights, kept for the retry

    fix_plugins(tmp_path)
    code, out = rerun(study, runs)
    assert code == 0 and failures(runs) == []
    assert not (runs / cells["simple"] / "ema-step10.pt").exists()
    diag_rows = dict(((c, s), v) for c, s, v in query(
        runs, "SELECT cell, step, value FROM metrics WHERE metric LIKE 'broken_diagnostic%'"))
    # the retry scored the kept step-10 weights: equal to the newly trained cell's, whose weighting w = 1 is `simple`'s
    assert diag_rows[(cells["simple"], 10)] == diag_rows[(cells["raising_weights"], 10)]
    assert diag_rows[(cells["simple"], FINAL)] == diag_rows[(cells["raising_weights"], FINAL)]
    assert {s for (s,) in query(runs, "SELECT status FROM cells")} == {"done"}


def test_every_bad_return_of_a_metric_is_recorded_and_every_good_one_stored(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("broken_plugins_cases", DATA / "broken_plugins.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)  # for its list of cases only
    RETURNS = cases.RETURNS  # noqa: N806
    metrics = [{"name": "scripted", "returns": case, "num_samples": 50} for case in RETURNS]
    study = isolation_study(tmp_path, seeds=(0,), **ORACLE, sampler=DDIM, metric=metrics)
    runs = tmp_path / "runs"
    code, out, _ = run_here(study, runs, capsys)
    assert code == 1
    stored = {}
    for metric, key, value in query(runs, "SELECT metric, key, value FROM metrics WHERE sampler = 'ddim(steps=5)'"):
        stored.setdefault(metric, {})[key] = value
    failed = {m: (p, e) for _, s, m, _, _, p, _, e in failures(runs) if s == "ddim(steps=5)"}
    good = {"good": {"a": 1.5, "b": 2.5, "c": 3.5, "d": 4.0}, "good_numpy": {"a": 0.25}}
    for case in RETURNS:
        label = f"scripted(num_samples=50, returns={case})"
        if case in good:
            assert stored[label] == good[case] and label not in failed
        else:
            assert label not in stored and failed[label][0] == "metric/scripted"
            assert failed[label][1].startswith("BadResult: returned"), failed[label]
    assert f"{2 * (len(RETURNS) - 2)} unit(s) of work failed" in out  # the sampler's and the floor's


@pytest.mark.parametrize("case, code, message", [
    ("bad_input", 2, "error: metric.reference: the metric's reference file is missing"),
    ("disk_full", 2, "error: cannot write cache/features.pt: No space left on device"),
    ("interrupt", 130, "interrupted: finished work is saved"),
])
def test_bad_input_a_full_disk_and_ctrl_c_in_a_plugin_still_stop_the_run(tmp_path, capsys, case, code, message):
    study = isolation_study(tmp_path, seeds=(0,), **ORACLE, metric=[{"name": "scripted", "returns": case, "num_samples": 50}],
                            sampler=DDIM)
    assert run(study) == code
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(message) and "Traceback" not in err, err
    assert query(tmp_path / "runs", "SELECT COUNT(*) FROM failures") == [(0,)]


def test_workers_send_their_failures_back_and_a_rerun_clears_them(tmp_path, capsys):
    study = isolation_study(tmp_path, seeds=(0,), **ORACLE, sampler=SAMPLERS, metric=[GOOD_METRIC],
                            executor={"name": "local", "workers": 2})
    runs = tmp_path / "runs"
    code, out, _ = run_here(study, runs, capsys)
    assert code == 1 and "1 unit(s) of work failed" in out  # the raising sampler's gmm_fit
    assert [(s, p) for _, s, _, _, _, p, _, _ in failures(runs)] == [("raising", "sampler/raising")]
    assert list(runs.glob("*/cell.db*")) == []
    assert query(runs, "SELECT COUNT(*) FROM evals WHERE sampler = 'ddim(steps=5)'") == [(1,)]
    fix_plugins(tmp_path)  # the workers are new processes: they import the fixed file
    assert run_here(study, runs, capsys)[0] == 0
    assert failures(runs) == [] and query(runs, "SELECT COUNT(*) FROM evals WHERE sampler = 'raising'") == [(1,)]


def test_merging_stores_keeps_a_failure_only_where_no_result_was_stored(tmp_path):
    boom = Failure("sampler/raising", "/abs/broken_plugins.py", "ValueError: boom")
    mine, other = Store(tmp_path / "mine.db"), Store(tmp_path / "other.db")
    try:
        mine.add_failure("k", "raising", "fid", boom)
        other.add_metric("k", "raising", "fid", {"fid": 1.0}, 10, 1, 0.1)  # the other machine's retry succeeded
        other.add_failure("k", "ddim", "fid", boom)  # and it failed where this one has nothing
        other.add_failure("k", "ancestral", "fid", boom)
        mine.add_metric("k", "ancestral", "fid", {"fid": 2.0}, 10, 1000, 0.1)  # where this one succeeded
        other.close()
        mine.merge_from(tmp_path / "other.db")
        assert mine.failures("k") == [("ddim", "fid", FINAL, "ema")]
    finally:
        mine.close()
