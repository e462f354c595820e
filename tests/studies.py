"""One way to write a study in the tests, and to run it.

A study is a base (TINY: a gmm2d + mlp study that trains in a second; `gmm(...)`: the larger gmm2d study
of the end-to-end and fault tests) with the tables a test changes merged in, key by key, except by the
rule a study's own grid uses for plugin tables: one naming another plugin than the base's replaces it. A
list replaces the list; None removes the key. `write_study` writes
it (and its plugin files) as TOML; `run` runs `ablate run` on it in this process, `run_process` in a
fresh one; `query` and the helpers after it read the results store with plain SQL.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from ablate import cli
from ablate.schema import plugin_sections
from ablate.store import REAL_DATA

DATA = Path(__file__).parent / "data"  # the plugin files and frozen studies the tests use

TINY: dict[str, Any] = {
    "study": {"name": "tiny", "seeds": [0]},
    "data": {"name": "gmm2d", "n_train": 200, "n_test": 100},
    "model": {"name": "mlp", "hidden": 16},
    "schedule": {"name": "linear", "T": 50},
    "train": {"steps": 5, "batch_size": 16, "warmup": 1},
    "eval": {"grid_samples": 0},
    "sampler": [{"name": "ancestral"}],
    "metric": [{"name": "gmm_fit", "num_samples": 100}],
}
# ... and the samplers and metrics most end-to-end tests evaluate: two samplers, a headline metric and a diagnostic
TWO_SAMPLERS = [{"name": "ancestral"}, {"name": "ddim", "steps": 5}]
FIT_AND_X0 = [{"name": "gmm_fit", "num_samples": 100}, {"name": "x0_error_by_t", "num_samples": 50, "timesteps": [0, 25]}]
GMM_KEYS = ["max_weight_error", "modes_covered", "nll", "off_mode_fraction", "std_ratio", "sw2"]  # gmm_fit's
X0_KEYS = ["mean", "t=0", "t=10", "t=50", "t=99"]  # x0_error_by_t's in `gmm`


def gmm(name: str = "tiny_gmm", steps: int = 200, hidden: int = 32, checkpoint_every: int = 50,
        samples: int = 500) -> dict[str, Any]:
    """The gmm2d study of the end-to-end and fault tests: gmm_fit at `samples` samples and x0_error_by_t.
    T = 100: the linear schedule scales its ends by 1000/T (beta 1e-3 -> 0.2), so x_T is still noise."""
    return {"study": {"name": name, "question": "a tiny gmm2d study for the tests", "seeds": [0]},
            "data": {"name": "gmm2d", "n_train": 2000, "n_test": 500},
            "model": {"name": "mlp", "hidden": hidden, "depth": 2},
            "schedule": {"name": "linear", "T": 100},
            "train": {"steps": steps, "batch_size": 128, "lr": 3e-3, "warmup": 10, "ema": 0.9,
                      "checkpoint_every": checkpoint_every, "log_every": 10},
            "eval": {"batch_size": 500, "grid_samples": 16},
            "sampler": [{"name": "ancestral"}],
            "metric": [{"name": "gmm_fit", "num_samples": samples},
                       {"name": "x0_error_by_t", "num_samples": 200, "timesteps": [0, 10, 50, 99]}]}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in (see the module's docstring); neither is modified."""
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        switched = key in plugin_sections(many=False) and value.get("name", old.get("name")) != old.get("name") \
            if isinstance(value, dict) and isinstance(old, dict) else True
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(old, dict) and not switched:
            out[key] = merged(old, value)
        else:
            out[key] = value
    return out


ORACLE = merged(TINY, {"model": {"name": "gmm_oracle"}, "train": None})  # gmm2d's exact posterior mean: nothing to train
# TINY evaluated like the end-to-end tests: 500 training points, 30 steps on the CPU, both samplers and metrics
TINY_EVAL = merged(TINY, {"data": {"n_train": 500, "n_test": 200}, "model": {"depth": 2},
                          "train": {"steps": 30, "batch_size": 64, "warmup": 0, "device": "cpu"}, "eval": {"batch_size": 200},
                          "sampler": TWO_SAMPLERS, "metric": FIT_AND_X0})


def study_text(base: dict[str, Any] = TINY, **tables: Any) -> str:
    """The TOML of `base` with `tables` merged in: top-level keys, then [tables] and [[lists of tables]]."""
    raw = merged(base, tables)
    many = {k for k, v in raw.items() if isinstance(v, list) and v and all(isinstance(t, dict) for t in v)}
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict) and k not in many]
    for key, value in raw.items():
        for table, header in ([(value, f"[{toml_key(key)}]")] if isinstance(value, dict) else
                              [(t, f"[[{toml_key(key)}]]") for t in value] if key in many else []):
            lines += ["", header, *(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def write_study(folder: Path, file: str = "study.toml", plugin_files: dict[str, str] | None = None,
                base: dict[str, Any] = TINY, **tables: Any) -> Path:
    """Write the study (see `study_text`) to folder/file; `plugin_files` (file name -> source) are written
    beside it and listed in its `plugins`, before any the study names itself."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in (plugin_files or {}).items():
        (folder / name).write_text(source)
    if plugin_files:
        tables["plugins"] = [f"./{name}" for name in plugin_files] + tables.get("plugins", [])
    path = folder / file
    path.write_text(study_text(base, **tables))
    return path


def plugin(source: str, **hooks: list[str]) -> str:
    """A plugin file: `source`, then one @hookimpl per hook returning the named classes
    (`plugin(code, ablate_samplers=["Shrunk"])`)."""
    impls = "".join(f"\n\n@hookimpl\ndef {hook}():\n    return [{', '.join(names)}]\n" for hook, names in hooks.items())
    return f"from ablate import hookimpl\n{source}\n{impls}"


def run(study: Path, runs: Path | None = None, *flags: str) -> int:
    """`ablate run STUDY --runs-dir RUNS FLAGS` in this process (runs: beside the study by default)."""
    return cli.main(["run", str(study), "--runs-dir", str(runs or study.parent / "runs"), *flags])


def run_process(study: Path, runs: Path, *flags: str, env: dict[str, str] | None = None, wait: bool = True,
                **popen: Any) -> subprocess.CompletedProcess | subprocess.Popen:
    """`python -m ablate.cli run STUDY --runs-dir RUNS FLAGS` in a fresh process, one thread like the tests
    (bitwise comparable), from the study's folder; `wait=False` returns the running process."""
    env = {**os.environ, "ABLATE_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    args = [sys.executable, "-m", "ablate.cli", "run", str(study), "--runs-dir", str(runs), *flags]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=study.parent, **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
                                                                    "text": True, **popen})
    return subprocess.run(args, env=env, cwd=study.parent, capture_output=True, text=True, timeout=300, **popen)


def query(runs: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of the results store under `runs`, by plain SQL."""
    with closing(sqlite3.connect(runs / "ablate.db")) as db:
        return db.execute(sql, params).fetchall()


def execute(runs: Path, sql: str, params: tuple = ()) -> None:
    with closing(sqlite3.connect(runs / "ablate.db")) as db, db:
        db.execute(sql, params)


def counts(runs: Path) -> dict[str, int]:
    return {table: query(runs, f"SELECT COUNT(*) FROM {table}")[0][0] for table in ("cells", "losses", "evals", "metrics")}


def losses(runs: Path) -> list[tuple]:
    return query(runs, "SELECT cell, step, loss FROM losses ORDER BY cell, step")


def metric_values(runs: Path) -> list[tuple]:
    return query(runs, "SELECT cell, sampler, metric, key, value, num_samples, nfe FROM metrics ORDER BY 1, 2, 3, 4")


def assert_no_duplicates(runs: Path) -> None:
    assert query(runs, "SELECT cell, sampler, metric, key, COUNT(*) FROM metrics GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1") == []
    assert query(runs, "SELECT cell, step, COUNT(*) FROM losses GROUP BY 1, 2 HAVING COUNT(*) > 1") == []
    assert query(runs, "SELECT cell, sampler, metric, COUNT(*) FROM evals GROUP BY 1, 2, 3 HAVING COUNT(*) > 1") == []


def name_of(label: str) -> str:
    """'one_step(jump_at=99)' -> 'one_step' (the real-data floor's label as it is)."""
    return label if label == REAL_DATA else label.split("(")[0]


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else toml_string(key)


def toml_value(value: Any) -> str:
    """One TOML value, tables inline (TOML's basic strings take JSON's escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML also forbids raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
