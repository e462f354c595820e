"""Executors on a tiny gmm2d study (CPU): `local` with workers = 2 and `ray` (one local Ray for the module)
give the metric values of the in-process run; a worker killed mid-task is retried with nothing stored
twice; a task that keeps failing is recorded as a failed cell; bad `[executor]` tables exit 2 naming the key.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

import ablate
from studies import DATA, TINY, merged, plugin, query, run, write_study

HAS_RAY = importlib.util.find_spec("ray") is not None

EXEC = merged(TINY, {"study": {"name": "tiny_exec", "seeds": [0, 1]}, "data": {"n_train": 1000, "n_test": 300},
                     "model": {"depth": 2},
                     "train": {"steps": 40, "batch_size": 64, "lr": 3e-3, "warmup": 5, "ema": 0.9, "checkpoint_every": 20,
                               "log_every": 10},
                     "eval": {"batch_size": 300}, "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
                     "metric": [{"name": "gmm_fit", "num_samples": 300},
                                {"name": "x0_error_by_t", "num_samples": 100, "timesteps": [0, 25, 49]}]})
LOCAL_2 = {"name": "local", "workers": 2, "max_retries": 1}

ALWAYS_DIES = plugin('''
import os
from ablate import Sampler

class AlwaysDies(Sampler):
    name = "always_dies"

    def sample(self, denoiser, diffusion, x, t_start, generator):
        os._exit(3)
''', ablate_samplers=["AlwaysDies"])


def write(tmp_path: Path, executor: dict | None = None, sampler: dict | None = None, plugins: tuple[str, ...] = (),
          seeds: tuple[int, ...] = (0, 1)) -> Path:
    """The study with `executor` (default: local), ancestral and `sampler`."""
    return write_study(tmp_path, base=EXEC, executor=executor or {"name": "local"}, study={"seeds": list(seeds)},
                       sampler=[{"name": "ancestral"}, *([sampler] if sampler else [])], **({"plugins": list(plugins)} if plugins else {}))


def metric_rows(runs: Path, exclude_sampler: str = "") -> list[tuple]:
    return query(runs, "SELECT cell, sampler, metric, key, step, weights, value, num_samples, nfe FROM metrics "
                       f"WHERE sampler NOT LIKE '{exclude_sampler or '#'}%' ORDER BY 1, 2, 3, 4, 5, 6")


def assert_clean(runs: Path) -> None:
    """No row twice, every cell done, and no cell store left behind."""
    assert query(runs, "SELECT cell, sampler, metric, key, step, weights, COUNT(*) FROM metrics GROUP BY 1, 2, 3, 4, 5, 6 "
                       "HAVING COUNT(*) > 1") == []
    assert query(runs, "SELECT cell, step, COUNT(*) FROM losses GROUP BY 1, 2 HAVING COUNT(*) > 1") == []
    assert {s for (s,) in query(runs, "SELECT status FROM cells")} == {"done"}
    assert list(runs.glob("*/cell.db*")) == []


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> Path:
    """The reference: the same study run cell after another in this process."""
    tmp = tmp_path_factory.mktemp("in_process")
    runs = tmp / "runs"
    ablate.run_study(write(tmp), runs_dir=runs, progress=False)
    return runs


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for every Ray test of this module: starting one costs seconds."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed (pip install 'ablate[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_in_process_reference_is_complete(in_process):
    rows = metric_rows(in_process)
    cells = {r[0] for r in rows}
    assert len(cells) == 4 and len(rows) > 4 * 5
    assert_clean(in_process)


def test_local_workers_give_the_in_process_values(tmp_path, in_process):
    runs = tmp_path / "runs"
    ablate.run_study(write(tmp_path, {"name": "local", "workers": 2}), runs_dir=runs, progress=False)
    assert metric_rows(runs) == metric_rows(in_process)
    assert query(runs, "SELECT * FROM losses ORDER BY 1, 2") == query(in_process, "SELECT * FROM losses ORDER BY 1, 2")
    assert_clean(runs)
    ablate.run_study(write(tmp_path, {"name": "local", "workers": 2}), runs_dir=runs, progress=False)  # rerun: nothing new
    assert metric_rows(runs) == metric_rows(in_process)


def test_killed_worker_is_retried_without_duplicates(tmp_path, in_process):
    """The first cell to reach the kill_once sampler SIGKILLs its worker process: that cell runs again
    (resuming from its own store and checkpoint) and the study ends with every value once."""
    marker = tmp_path / "killed"
    study = write(tmp_path, LOCAL_2, {"name": "kill_once", "marker": str(marker)}, (str(DATA / "kill_once_sampler.py"),))
    runs = tmp_path / "runs"
    ablate.run_study(study, runs_dir=runs, progress=False)
    assert marker.exists()
    assert_clean(runs)
    assert metric_rows(runs, exclude_sampler="kill_once") == metric_rows(in_process)
    assert query(runs, "SELECT COUNT(*) FROM evals WHERE sampler LIKE 'kill_once%'") == [(4,)]  # gmm_fit per cell


def test_task_that_keeps_dying_is_recorded_failed(tmp_path, capsys):
    plugin = tmp_path / "dies.py"
    plugin.write_text(ALWAYS_DIES)
    study = write(tmp_path, LOCAL_2, {"name": "always_dies"}, (str(plugin),), seeds=(0,))
    runs = tmp_path / "runs"
    ablate.run_study(study, runs_dir=runs, progress=True)
    reasons = query(runs, "SELECT status, reason FROM cells")
    assert reasons == [("failed", "its worker process died (tried 2 times)")] * 2
    assert "FAILED" in capsys.readouterr().out
    # what the cells finished before dying (training, the ancestral sampler) was kept, once
    assert query(runs, "SELECT COUNT(DISTINCT cell) FROM evals WHERE sampler = 'ancestral'") == [(2,)]
    assert list(runs.glob("*/cell.db*")) == []


def test_ray_gives_the_in_process_values_and_retries_a_killed_worker(tmp_path, in_process, local_ray):
    """One Ray run (each costs about a minute on 2 busy cores) checks both: a worker killed mid-task is
    retried, and every other row equals the in-process run's."""
    marker = tmp_path / "killed"
    study = write(tmp_path, {"name": "ray", "max_retries": 1, "cpus_per_cell": 1}, {"name": "kill_once", "marker": str(marker)},
                  (str(DATA / "kill_once_sampler.py"),))
    runs = tmp_path / "runs"
    ablate.run_study(study, runs_dir=runs, progress=False)
    assert marker.exists()
    assert_clean(runs)
    assert metric_rows(runs, exclude_sampler="kill_once") == metric_rows(in_process)


def test_ray_refuses_more_gpus_than_any_node_has(tmp_path, local_ray, capsys):
    study = write(tmp_path, {"name": "ray", "gpus_per_cell": 0.25})
    assert run(study) == 2
    err = capsys.readouterr().err
    assert "executor.gpus_per_cell" in err and "no node of the Ray cluster" in err


@pytest.mark.parametrize(("table", "key"), [
    ('name = "local"\nworker = 2', "worker"),
    ('name = "local"\nworkers = 0', "workers"),
    ('name = "ray"\ngpus_per_cell = -0.5', "gpus_per_cell"),
    ('name = "ray"\ncpus_per_cell = 0', "cpus_per_cell"),
    ('name = "ray"\nmax_retries = -1', "max_retries"),
])
def test_bad_executor_table_exits_2_naming_the_key(tmp_path, capsys, table, key):
    if 'name = "ray"' in table and not HAS_RAY:
        pytest.skip("Ray is not installed")
    study = write(tmp_path, tomllib.loads(table))
    assert run(study) == 2
    err = capsys.readouterr().err
    assert f"executor.{key}" in err and err.count("\n") >= 1
    assert not (tmp_path / "runs" / "ablate.db").exists()  # found before anything ran


def test_ray_missing_says_how_to_install(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    study = write(tmp_path, {"name": "ray"})
    assert run(study) == 2
    assert "pip install 'ablate[ray]'" in capsys.readouterr().err


def test_a_node_without_the_shared_files_is_named(tmp_path):
    from ablate_plugins.executors import _read_marker

    marker = tmp_path / "marker"
    assert _read_marker(str(marker), "abc", str(tmp_path))[1].startswith("cannot read")
    marker.write_text("other")
    assert "another machine's directory" in _read_marker(str(marker), "abc", str(tmp_path))[1]
    marker.write_text("abc")
    assert "study file" in _read_marker(str(marker), "abc", str(tmp_path / "missing.toml"))[1]
    study = tmp_path / "s.toml"
    study.write_text("")
    assert _read_marker(str(marker), "abc", str(study))[1] is None
