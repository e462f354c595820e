"""Training and evaluating one cell: the unit of work the driver (ablate.runner) runs in its own process
and a worker (ablate.worker) runs in another, so both decide the same way what is done and what is left.

A cell's work is a unit (ablate.faults): an exception from a plugin fails the cell, recorded with the
plugin, and the study goes on. Finished evaluations are skipped; failed learning-curve evaluations are
retried from the weights kept for them.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate import halves, ladder
from ablate.cell import Parts, pick_device
from ablate.datatypes import Data
from ablate.errors import TrainingDiverged
from ablate.evaluate import curve_sampler, evaluate_cell, headline
from ablate.faults import blame, isolated
from ablate.interfaces import KINDS
from ablate.provenance import evaluated_labels
from ablate.store import CELL, FINAL, LADDER, NO_SAMPLER, REAL_DATA, REFERENCE_ROWS, Store
from ablate.study import Cell, Study
from ablate.train import load_checkpoint, save_atomic, train_cell


def run_cell(study: Study, cell: Cell, store: Store, runs_dir: Path, datasets: dict[str, Data],
              progress: bool, prefix: str) -> str:
    """Train and evaluate one cell; returns its summary line. The cell's own work is a unit (ablate.faults):
    an exception from a plugin fails the cell, recorded with the plugin, and the study goes on; a rerun
    retries it (a NaN loss, which would come back the same, fails it for good)."""
    name = f"{prefix} {cell.arm} seed {cell.seed} ({cell.key})"
    state = store.cell(cell.key) or {}
    if state.get("status") == "failed":
        return f"{name}: failed earlier ({state.get('reason')}); not retried"
    if state.get("status") == "done" and all_evaluated(study, cell, store, runs_dir, datasets):
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
    data = cell_data(study, cell.config, datasets)
    parts = Parts.from_config(study.registry, cell.config)
    t0 = time.time()
    steps_before = state.get("step", 0)
    if progress:
        print(f"{name}: training", file=sys.stderr)
    at_steps = tuple(s for s in study.eval.at_steps if 0 < s < cell.config["train"]["steps"])
    # failed learning-curve evaluations of steps training will not pass again: retried from their kept weights
    retry = sorted({step for _, _, step, _ in cell_failures(study, cell, store) if step != FINAL and step < steps_before})

    def learning_curve(step: int, ema: nn.Module) -> list[str]:
        """Evaluate an intermediate step's weights; while an evaluation of them fails they are kept beside the
        checkpoint (which moves on), so that a rerun can retry it."""
        out = evaluate_cell(cell.key, cell.config, study, parts, data, ema, run_dir, store, runs_dir / "cache", False, step)
        kept = run_dir / f"ema-step{step}.pt"
        if any(s == step for _, _, s, _ in cell_failures(study, cell, store)):
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
    if curve_end(study, cell) is not None:  # the headline curve's last point: the final weights at the curve's count
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


def cell_data(study: Study, config: dict[str, Any], datasets: dict[str, Data]) -> Data:
    """A cell's data (its splits, after train_half), loaded once per run and data config."""
    key = json.dumps(config["data"], sort_keys=True)
    if key not in datasets:
        datasets[key] = study.registry.from_table("dataset", config["data"]).splits()
    return datasets[key]


def cell_failures(study: Study, cell: Cell, store: Store) -> list[tuple[str, str, int, str]]:
    """The cell's failed units (sampler, metric, step, weights) of this study: a shared cell may hold other studies'."""
    labels = evaluated_labels(study)
    samplers, metrics = {*labels["samplers"], NO_SAMPLER, *REFERENCE_ROWS, CELL}, {*labels["metrics"], CELL}
    return [unit for unit in store.failures(cell.key) if unit[0] in samplers and unit[1] in metrics]


def curve_end(study: Study, cell: Cell) -> int | None:
    """The step of the headline curve's final point (train.steps), or None when the study has no headline
    curve for this cell (no `eval.curve_samples`, or no `eval.at_steps` inside its training)."""
    steps = cell.config["train"]["steps"]
    if study.eval.curve_samples is None or not any(0 < s < steps for s in study.eval.at_steps):
        return None
    return steps


def all_evaluated(study: Study, cell: Cell, store: Store, runs_dir: Path, datasets: dict[str, Data]) -> bool:
    """Every evaluation of the study stored for this cell: the floor, the calibration ladder, the headline curve
    and the two-halves samples included. The data is loaded only when a ladder rung is missing, to tell
    whether the cell gets that rung."""
    if cell_failures(study, cell, store) or not halves.drawn(study, cell, runs_dir):
        return False
    labels = evaluated_labels(study)
    end = curve_end(study, cell)
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
        rungs = ladder.labels(cell_data(study, cell.config, datasets))
    except Exception:  # the cell's own unit loads it again, and records why it fails
        return False
    return not missing & set(rungs)

