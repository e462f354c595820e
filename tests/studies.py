"""One way to write a study in the tests, and to run it.

A study is TINY (a gmm2d + mlp study that trains in a second) with the tables a test changes merged in,
by the rule a study's own grid uses: a table naming the same plugin as the base (or no plugin) keeps the
base's other keys, a table naming another plugin replaces it, a list replaces the list, None removes the
key. `write_study` writes it (and its plugin files) as TOML; `run` runs `ablate run` on it in this
process, `run_process` in a fresh one; `query` reads the results store with plain SQL.
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


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in (see the module's docstring); neither is modified."""
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(old, dict) and value.get("name", old.get("name")) == old.get("name"):
            out[key] = merged(old, value)
        else:
            out[key] = value
    return out


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
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML also forbids raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
