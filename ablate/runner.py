"""`ablate run`: validate the whole study, then train and evaluate every cell, skipping finished work.

Finished work is reused only when the plugin code it rests on is the same: every cell and every
evaluation records the identity of its plugins (a local file's sha256, a package's version,
ablate's version for the built-ins). Results of changed code stop the run (exit 2) with a list,
until `--recompute-stale` deletes and recomputes them. Only this study's results are judged, each
against the current code of the plugins it names: another study's evaluations of a shared cell, or
a sampler this profile leaves out, are neither stale nor touched.

This module plans and schedules: it settles stale results, records the run and hands the cells to the
executor. One cell's training and evaluation is ablate.cellrun (in this process) or ablate.worker (in
another); what the results rest on is ablate.provenance.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ablate import halves
from ablate.cell import pick_device
from ablate.cellrun import cell_data, run_cell
from ablate.datatypes import Data
from ablate.errors import AblateError
from ablate.evaluate import samples_path
from ablate.faults import failure_lines, storage_failure
from ablate.identity import changes
from ablate.provenance import cell_plugins, eval_plugins, evaluated_labels, metric_keys, plugin_provenance
from ablate.remote import run_remote
from ablate.store import NO_SAMPLER, REFERENCE_ROWS, Store
from ablate.study import Cell, Study, load_study
from ablate.summary import print_summary
from ablate.threads import run_threads
from ablate.tracking import Mirror, add_trackers, forget


@contextmanager
def storage_errors(runs_dir: Path):
    """A full disk or an unwritable runs dir is one clear line (exit 2). Every store write is one
    transaction and every checkpoint is written then renamed, so what was stored before is kept."""
    hint = "what was stored before is kept; fix this and rerun the same command to resume"
    try:
        yield
    except (OSError, sqlite3.OperationalError, RuntimeError) as exc:
        if not storage_failure(exc):
            raise
        if isinstance(exc, OSError):
            raise AblateError(f"cannot write {exc.filename or runs_dir}: {exc.strerror}; {hint}") from None
        if isinstance(exc, sqlite3.OperationalError):
            raise AblateError(f"cannot write the results store {runs_dir / 'ablate.db'}: {exc}; {hint}") from None
        raise AblateError(f"cannot write a checkpoint under {runs_dir} (disk full?): {str(exc).splitlines()[0]}; {hint}") from None


@contextmanager
def runs_lock(runs_dir: Path):
    """One study at a time per runs dir: a second `ablate run` fails fast instead of racing."""
    with storage_errors(runs_dir):
        if runs_dir.exists() and not runs_dir.is_dir():
            raise AblateError(f"--runs-dir {runs_dir} is a file, not a directory")
        runs_dir.mkdir(parents=True, exist_ok=True)
        with open(runs_dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AblateError(f"another `ablate run` is using {runs_dir}; wait for it or pass --runs-dir") from None
            yield


def hardware(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_study(path: str | Path, profile: str | None = None, overrides: tuple[str, ...] | list[str] = (),
              executor: str | None = None, runs_dir: str | Path = "runs", progress: bool = True,
              extra_plugins: tuple[str, ...] | list[str] = (), recompute_stale: bool = False,
              threads: int | None = None, trackers: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Train and evaluate every cell of a study; returns the study's metric rows as a DataFrame.

    overrides: "dotted.key=value" strings, as `--set` takes them (["train.steps=300", "study.seeds=[0]"]).
    runs_dir: the results folder, "runs" relative to the current directory unless given (as `ablate run`).

    recompute_stale: delete and recompute results whose plugin code changed (else: AblateError listing them).
    A plugin that fails costs only its own units of work (ablate.faults): they are listed, as dicts (arm, seed,
    cell, sampler, metric, step, weights, plugin, origin, error), in the frame's attrs["failures"].

    threads: torch threads per process (default: the executor's, else this run's share of the cores:
    ablate.threads); the run's hardware records the count.
    trackers: tracker names added to the study's `[[tracker]]` tables (`--track`)."""
    study = load_study(path, profile, overrides, extra_plugins)
    add_trackers(study, trackers)
    if executor is not None and executor != study.executor["name"]:  # the same name keeps the study's table
        study.executor = {"name": executor}
    executor_plugin = study.registry.from_table("executor", study.executor)
    runs_dir = Path(runs_dir)
    say = print if progress else (lambda *a, **k: None)
    threads = threads or getattr(executor_plugin, "threads", None)
    with runs_lock(runs_dir), run_threads(threads, getattr(executor_plugin, "processes", 1)) as retake:
        store = Store(runs_dir / "ablate.db")
        mirror = None
        try:
            identities = {cell.key: cell_plugins(study, cell) for cell in study.cells}
            store.set_identities(*eval_plugins(study))
            for line in settle_stale(study, store, runs_dir, identities, recompute_stale):
                say(f"recomputing {line}")
            device = pick_device(study.cells[0].config["train"]["device"])
            run_id = store.start_run(study.name, profile, str(Path(path).resolve()), hardware(device),
                                     plugin_provenance(study), {"overrides": list(overrides), "executor": study.executor,
                                      "question": study.question, "contrasts": study.contrasts, "companions": study.companions, **evaluated_labels(study),
                                      "metric_keys": metric_keys(study)})
            for cell in study.cells:
                store.add_cell(run_id, cell.key, cell.config, cell.arm, cell.seed, identities[cell.key])
            evaluation_ids = {k: v for by_label in eval_plugins(study) for ids in by_label.values()
                              for k, v in ids.items() if k != "eval"}
            mirror = Mirror(study, store, runs_dir, {k: {**ids, **evaluation_ids} for k, ids in identities.items()},
                            evaluated_labels(study))
            say(f"study {study.name}" + (f" (profile {profile})" if profile else "") +
                f": {len(study.cells)} cells x {len(study.samplers)} samplers x {len(study.metrics)} metrics, device {device}")
            datasets: dict[str, Data] = {}
            total = len(study.cells)
            settled: list[str] = []  # cells whose line came back, for the trackers

            def work(item: tuple[int, Cell]) -> str:
                i, cell = item
                retake()  # other runs may have started or ended since the last cell
                line = run_cell(study, cell, store, runs_dir, datasets, progress, f"[{i}/{total}]")
                settled.append(cell.key)
                return line

            started = time.time()
            if getattr(executor_plugin, "remote", False):  # other processes: they send results back (ablate.remote)
                lines = run_remote(executor_plugin.map, study, store, runs_dir, {
                    "study_path": str(Path(path).resolve()), "profile": profile, "overrides": tuple(overrides),
                    "extra_plugins": tuple(str(Path(p).resolve()) for p in extra_plugins)}, threads, settled)
            else:
                lines = executor_plugin.map(work, enumerate(study.cells, 1))
            for line in lines:
                say(line)
                mirror.log(settled)
            for line in halves.compare(study, store, runs_dir, lambda config: cell_data(study, config, datasets)):
                say(line)
            mirror.log([cell.key for cell in study.cells])  # the two halves' rows, stored after the cells' lines
            store.finish_run(run_id)
            frame = store.results(study.name, run_id=run_id)
            failed = store.frame("SELECT rc.arm, rc.seed, c.reason FROM run_cells rc JOIN cells c ON c.key = rc.cell "
                                 "WHERE rc.run=? AND c.status='failed'", (run_id,))
            frame.attrs["failures"] = store.run_failures(run_id).to_dict("records")
        finally:
            if mirror is not None:
                mirror.close()
            store.close()
    if progress:
        print_summary(frame, metric_keys(study), [c.arm for c in study.cells])
        for row in failed.itertuples():
            print(f"FAILED {row.arm} seed {row.seed}: {row.reason}")
        for line in failure_lines(frame.attrs["failures"], str(runs_dir / "ablate.db")):
            print(line)
        print(f"done in {time.time() - started:.1f}s; results in {runs_dir / 'ablate.db'}")
    return frame


def settle_stale(study: Study, store: Store, runs_dir: Path, identities: dict[str, dict[str, str]],
                 recompute: bool) -> list[str]:
    """Results of this study computed by plugin code that has changed since are never reused silently:
    without `recompute` they stop the run; with it their files and rows are deleted (rows in one
    transaction). Rows of samplers and metrics this study does not evaluate are left alone."""
    cells = store.stale_cells(identities)
    evals = [e for e in store.stale_evals([c.key for c in study.cells]) if e[0] not in cells]
    if not cells and not evals:
        return []
    names = {c.key: f"{c.arm} seed {c.seed} ({c.key})" for c in study.cells}
    lines = [f"cell {names[k]}: {_changes(old, identities[k])}" for k, old in cells.items()]
    lines += [f"evaluation {s} x {m} of {names[k]}: {_changes(old, json.loads(store.eval_identity(s, m) or '{}'))}"
              for k, s, m, old in evals]
    if not recompute:
        raise AblateError(f"stored results computed by plugin code that has changed since ({len(lines)}); rerun "
                          "with --recompute-stale to delete and recompute them:\n  " + "\n  ".join(lines))
    for key in cells:  # files first: a kill before the rows go leaves them stale, so they are deleted again
        shutil.rmtree(runs_dir / key, ignore_errors=True)
    for key, sampler, _, _ in evals:
        if sampler not in (NO_SAMPLER, *REFERENCE_ROWS):
            samples_path(runs_dir / key, sampler).unlink(missing_ok=True)
            halves.samples_path(runs_dir / key, sampler).unlink(missing_ok=True)
    store.forget({k: identities[k] for k in cells}, [(k, s, m) for k, s, m, _ in evals])
    forget(store, cells, [(k, s, m) for k, s, m, _ in evals])
    return lines


def _changes(old: dict[str, str] | None, new: dict[str, str]) -> str:
    if old is None:
        return "stored without plugin identities"
    return "; ".join(f"{k} was {was or 'not set'}, now {now or 'not set'}" for k, (was, now) in changes(old, new).items())
