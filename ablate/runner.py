"""`ablate run`: validate the whole study, then train and evaluate every cell, skipping finished work.

Finished work is reused only when the plugin code it rests on is the same: every cell and every
evaluation records the identity of its plugins (a local file's sha256, a package's version,
ablate's version for the built-ins). Results of changed code stop the run (exit 2) with a list,
until `--recompute-stale` deletes and recomputes them. Only this study's results are judged, each
against the current code of the plugins it names: another study's evaluations of a shared cell, or
a sampler this profile leaves out, are neither stale nor touched.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import json
import os
import platform
import shutil
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ablate import halves, ladder
from ablate.cell import Parts, pick_device
from ablate.errors import AblateError, TrainingDiverged
from ablate.evaluate import curve_sampler, evaluate_cell, headline, samples_path
from ablate.faults import blame, failure_lines, isolated, storage_failure
from ablate.identity import changes, plugin_identity
from ablate.interfaces import KINDS, Data
from ablate.store import CELL, FINAL, LADDER, NO_SAMPLER, REAL_DATA, REFERENCE_ROWS, Store
from ablate.study import Cell, EvalConfig, Study, load_study
from ablate.summary import print_summary
from ablate.threads import run_threads
from ablate.tracking import Mirror, add_trackers, forget
from ablate.train import load_checkpoint, save_atomic, train_cell
from ablate.worker import run_remote


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


EVAL_METHOD = ("reference", "clip_x0")  # eval settings that change what the stored numbers mean
EVAL_DEFAULTS = EvalConfig().model_dump()


def cell_plugins(study: Study, cell: Cell) -> dict[str, str]:
    """'kind/name' -> identity of the plugins that train a cell (every kind with `cell=True`)."""
    names = ((k.name, cell.config[k.section]["name"]) for k in KINDS.values() if k.cell)
    return {f"{kind}/{name}": plugin_identity(study.registry, kind, name) for kind, name in names}


def eval_plugins(study: Study) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Sampler and metric label -> {'kind/name': identity}: what each evaluation rests on (besides its cell)."""
    out = []
    for kind, tables in (("sampler", study.samplers), ("metric", study.metrics)):
        out.append({study.registry.label(kind, t): {f"{kind}/{t['name']}": plugin_identity(study.registry, kind, t["name"])}
                    for t in tables})
    out[1][halves.HALVES] = {}  # the generalisation rows rest on the sampler (and the cells) alone
    # evaluation settings that change what a metric measures are part of what it rests on (only when set,
    # so results stored with the defaults keep their identity)
    method = {k: v for k, v in study.eval.model_dump().items() if k in EVAL_METHOD and v != EVAL_DEFAULTS[k]}
    if method:
        out[1] = {m: {**ids, "eval": json.dumps(method, sort_keys=True)} for m, ids in out[1].items()}
    return out[0], out[1]


def plugin_provenance(study: Study) -> dict[str, str]:
    """'kind/name' -> identity (built-in, package==version, or file and sha256): a report says exactly what ran."""
    used: set[tuple[str, str]] = set()
    for kind in KINDS.values():
        if kind.cell:
            used |= {(kind.name, cell.config[kind.section]["name"]) for cell in study.cells}
        else:
            tables = study.sections[kind.section] if kind.many else [study.sections[kind.section]]
            used |= {(kind.name, table["name"]) for table in tables}
    return {f"{kind}/{name}": plugin_identity(study.registry, kind, name) for kind, name in sorted(used)}


def evaluated_labels(study: Study) -> dict[str, list[str]]:
    """The sampler and metric labels a study evaluates: a shared cell may hold other studies' rows too."""
    return {"samplers": [study.registry.label("sampler", s) for s in study.samplers],
            "metrics": [study.registry.label("metric", m) for m in study.metrics]}


def metric_keys(study: Study) -> dict[str, dict[str, dict[str, Any]]]:
    """Each metric's declared output keys, recorded with the run so a report needs no plugin code."""
    out = {}
    for spec in study.metrics:
        cls = study.registry.get("metric", spec["name"])
        out[study.registry.label("metric", spec)] = {k: dataclasses.asdict(v) for k, v in cls.keys.items()}
    return out


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
                line = _run_cell(study, cell, store, runs_dir, datasets, progress, f"[{i}/{total}]")
                settled.append(cell.key)
                return line

            started = time.time()
            if getattr(executor_plugin, "remote", False):  # other processes: they send results back (ablate.worker)
                lines = run_remote(executor_plugin.map, study, store, runs_dir, {
                    "study_path": str(Path(path).resolve()), "profile": profile, "overrides": tuple(overrides),
                    "extra_plugins": tuple(str(Path(p).resolve()) for p in extra_plugins)}, threads, settled)
            else:
                lines = executor_plugin.map(work, enumerate(study.cells, 1))
            for line in lines:
                say(line)
                mirror.log(settled)
            for line in halves.compare(study, store, runs_dir, lambda config: _data(study, config, datasets)):
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


def _run_cell(study: Study, cell: Cell, store: Store, runs_dir: Path, datasets: dict[str, Data],
              progress: bool, prefix: str) -> str:
    """Train and evaluate one cell; returns its summary line. The cell's own work is a unit (ablate.faults):
    an exception from a plugin fails the cell, recorded with the plugin, and the study goes on; a rerun
    retries it (a NaN loss, which would come back the same, fails it for good)."""
    name = f"{prefix} {cell.arm} seed {cell.seed} ({cell.key})"
    state = store.cell(cell.key) or {}
    if state.get("status") == "failed":
        return f"{name}: failed earlier ({state.get('reason')}); not retried"
    if state.get("status") == "done" and _all_evaluated(study, cell, store, runs_dir, datasets):
        return f"{name}: already done"
    try:
        line = _train_and_evaluate(study, cell, store, runs_dir, datasets, progress, name, state)
    except TrainingDiverged as exc:
        store.update_cell(cell.key, status="failed", reason=str(exc))
        return f"{name}: FAILED ({exc})"
    except Exception as exc:
        if not isolated(exc):
            raise
        suspects = [(k.name, cell.config[k.section]["name"]) for k in KINDS.values() if k.cell]
        suspects += [(kind, t["name"]) for kind, tables in (("sampler", study.samplers), ("metric", study.metrics)) for t in tables]
        failure = blame(exc, study.registry, suspects)
        store.add_failure(cell.key, CELL, CELL, failure)
        return f"{name}: FAILED ({failure})"
    store.clear_failure(cell.key)
    return line


def _train_and_evaluate(study: Study, cell: Cell, store: Store, runs_dir: Path, datasets: dict[str, Data],
                        progress: bool, name: str, state: dict[str, Any]) -> str:
    run_dir = runs_dir / cell.key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cell.config, indent=2, sort_keys=True))
    data = _data(study, cell.config, datasets)
    parts = Parts.from_config(study.registry, cell.config)
    t0 = time.time()
    steps_before = state.get("step", 0)
    if progress:
        print(f"{name}: training", file=sys.stderr)
    at_steps = tuple(s for s in study.eval.at_steps if 0 < s < cell.config["train"]["steps"])
    # failed learning-curve evaluations of steps training will not pass again: retried from their kept weights
    retry = sorted({step for _, _, step, _ in _failures(study, cell, store) if step != FINAL and step < steps_before})

    def learning_curve(step: int, ema: nn.Module) -> list[str]:
        """Evaluate an intermediate step's weights; while an evaluation of them fails they are kept beside the
        checkpoint (which moves on), so that a rerun can retry it."""
        out = evaluate_cell(cell.key, cell.config, study, parts, data, ema, run_dir, store, runs_dir / "cache", False, step)
        kept = run_dir / f"ema-step{step}.pt"
        if any(s == step for _, _, s, _ in _failures(study, cell, store)):
            if not kept.exists():
                save_atomic({"ema": ema.state_dict()}, kept)
        else:
            kept.unlink(missing_ok=True)
        return out

    module = train_cell(cell.key, cell.config, parts, data, run_dir, store, progress, at_steps, learning_curve)
    store.update_cell(cell.key, status="trained", num_params=sum(p.numel() for p in module.parameters()))
    train_s = time.time() - t0
    device, results = pick_device(cell.config["train"]["device"]), []
    for step in retry:
        if (kept := run_dir / f"ema-step{step}.pt").exists():
            weights = copy.deepcopy(module)
            weights.load_state_dict(torch.load(kept, map_location=device, weights_only=True)["ema"])
            results += learning_curve(step, weights.eval())
    results += evaluate_cell(cell.key, cell.config, study, parts, data, module, run_dir, store,
                             runs_dir / "cache", progress)
    if _curve_end(study, cell) is not None:  # the headline curve's last point: the final weights at the curve's count
        results += evaluate_cell(cell.key, cell.config, study, parts, data, module, run_dir, store,
                                 runs_dir / "cache", False, cell.config["train"]["steps"])
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", device) if study.eval.raw_weights and parts.model.trainable else None
    if ckpt is not None:  # the live (non-EMA) weights of the last step, saved beside the EMA ones
        raw = copy.deepcopy(module)
        raw.load_state_dict(ckpt["model"])
        results += evaluate_cell(cell.key, cell.config, study, parts, data, raw.eval(), run_dir, store,
                                 runs_dir / "cache", progress, weights="raw")
    store.update_cell(cell.key, status="done")
    last = store.frame("SELECT loss FROM losses WHERE cell=? ORDER BY step DESC LIMIT 1", (cell.key,))
    loss = f", final loss {last.loss[0]:.4f}" if len(last) else ""
    trained = f"trained {cell.config['train']['steps'] - steps_before} steps in {train_s:.1f}s" if parts.model.trainable \
        and steps_before < cell.config["train"]["steps"] else "no training needed"
    return f"{name}: {trained}{loss}; " + ("; ".join(results) or "nothing new to evaluate")


def _data(study: Study, config: dict[str, Any], datasets: dict[str, Data]) -> Data:
    """A cell's data (its splits, after train_half), loaded once per run and data config."""
    key = json.dumps(config["data"], sort_keys=True)
    if key not in datasets:
        datasets[key] = study.registry.from_table("dataset", config["data"]).splits()
    return datasets[key]


def _failures(study: Study, cell: Cell, store: Store) -> list[tuple[str, str, int, str]]:
    """The cell's failed units (sampler, metric, step, weights) of this study: a shared cell may hold other studies'."""
    labels = evaluated_labels(study)
    samplers, metrics = {*labels["samplers"], NO_SAMPLER, *REFERENCE_ROWS, CELL}, {*labels["metrics"], CELL}
    return [unit for unit in store.failures(cell.key) if unit[0] in samplers and unit[1] in metrics]


def _curve_end(study: Study, cell: Cell) -> int | None:
    """The step of the headline curve's final point (train.steps), or None when the study has no headline
    curve for this cell (no `eval.curve_samples`, or no `eval.at_steps` inside its training)."""
    steps = cell.config["train"]["steps"]
    if study.eval.curve_samples is None or not any(0 < s < steps for s in study.eval.at_steps):
        return None
    return steps


def _all_evaluated(study: Study, cell: Cell, store: Store, runs_dir: Path, datasets: dict[str, Data]) -> bool:
    """Every evaluation of the study stored for this cell: the floor, the calibration ladder, the headline curve
    and the two-halves samples included. The data is loaded only when a ladder rung is missing, to tell
    whether the cell gets that rung."""
    if _failures(study, cell, store) or not halves.drawn(study, cell, runs_dir):
        return False
    labels = evaluated_labels(study)
    end = _curve_end(study, cell)
    if end is not None:
        curve = study.registry.label("sampler", curve_sampler(study))
        heads = [m_label for m, m_label in zip(study.metrics, labels["metrics"], strict=True)
                 if headline(study.registry.get("metric", m["name"]))]
        if not all(store.eval_done(cell.key, s, m, end) for m in heads for s in (curve, REAL_DATA)):
            return False
    weights = ("ema", "raw") if study.eval.raw_weights else ("ema",)
    sampled = []
    for m, m_label in zip(study.metrics, labels["metrics"], strict=True):
        needs_samples = study.registry.get("metric", m["name"]).needs_samples
        samplers = [*labels["samplers"], REAL_DATA] if needs_samples else [NO_SAMPLER]
        if not all(store.eval_done(cell.key, s, m_label, weights=w) for s in samplers for w in weights
                   if not (s == REAL_DATA and w == "raw")):
            return False
        sampled += [m_label] if needs_samples else []
    missing = {rung for rung in LADDER for m in sampled if not store.eval_done(cell.key, rung, m)}
    if not missing:
        return True
    try:
        rungs = ladder.labels(_data(study, cell.config, datasets))
    except Exception:  # the cell's own unit loads it again, and records why it fails
        return False
    return not missing & set(rungs)

