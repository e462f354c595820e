"""`ablate run --dry-run`: what a run would do and about how long it would take, with nothing trained
and nothing written to the runs dir.

The study is validated as `ablate run` validates it. The plan is read from a copy of the runs dir's
store in a temporary folder (the real one is never opened, so not even SQLite's side files appear):
each cell is new, cached, resumed, stale (its plugin code changed: the store's own staleness check) or
failed, and each evaluation (cell x sampler x metric) is done or pending. The time estimate uses the
seconds per training step and per sampled network evaluation already measured in the runs dir for
cells with the same data and model; where there are none, a short probe (a few training steps and
network evaluations of one such cell, in the temporary folder) measures them.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablate.cell import Parts, pick_device
from ablate.interfaces import Sampler
from ablate.provenance import cell_plugins, eval_plugins, evaluated_labels
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA, Store
from ablate.study import Cell, Study, load_study
from ablate.train import train_cell

PROBE_STEPS = 20  # training steps of a probe
PROBE_CALLS = 3  # timed network evaluations of a probe, after one warm-up call
Eval = tuple[str, str, int, str]  # (sampler, metric, step, weights)


@dataclass
class Rates:
    """Seconds per training step and per sample per network evaluation for one kind of cell, and whence."""

    step: float | None = None
    nfe: float | None = None
    source: str = ""


@dataclass
class Work:
    """One cell's part of the run."""

    cell: Cell
    status: str  # new, resume, stale, cached, failed
    steps: int = 0  # training steps left
    evals: list[Eval] = field(default_factory=list)


def snapshot(runs_dir: Path, tmp: Path) -> Store:
    """A copy of the runs dir's store (or an empty store) in tmp: the plan may ask it anything."""
    db = runs_dir / "ablate.db"
    for suffix in ("", "-wal"):  # the log too: committed rows may not be in the main file yet
        if Path(f"{db}{suffix}").is_file():
            shutil.copyfile(f"{db}{suffix}", tmp / f"ablate.db{suffix}")
    return Store(tmp / "ablate.db")


def kind_of(config: dict[str, Any], train: bool = False) -> str:
    """Cells of one kind cost the same per step and per sample: same data and model (and batch size)."""
    key = {"data": config["data"], "model": config["model"]}
    return json.dumps({**key, "batch_size": config["train"]["batch_size"]} if train else key, sort_keys=True)


def plan_cells(study: Study, store: Store, stale_cells: set[str], stale_evals: set[tuple[str, str, str]]) -> list[Work]:
    """What the run would do with each cell, as ablate.cellrun.run_cell decides it."""
    out = []
    for cell in study.cells:
        state = store.cell(cell.key) or {}
        total = cell.config["train"]["steps"] if study.registry.get("model", cell.config["model"]["name"]).trainable else 0
        if cell.key in stale_cells or not state or (state["status"] == "pending" and state["step"] == 0):
            status, start = ("stale" if cell.key in stale_cells else "new"), 0
        elif state["status"] == "failed":
            out.append(Work(cell, "failed"))
            continue
        else:
            start = min(state["step"], total)
            status = "resume" if start < total else "cached"
        fresh = status in ("new", "stale")
        work = Work(cell, status, total - start, pending(study, cell, store, fresh, stale_evals, start, total))
        out.append(work)
    return out


def pending(study: Study, cell: Cell, store: Store, fresh: bool, stale: set[tuple[str, str, str]],
            start: int, total: int) -> list[Eval]:
    """The evaluations the run would compute for a cell: the final weights' (EMA, raw when asked for)
    and, for steps still to train, the learning-curve points of the cheap metrics."""
    labels = evaluated_labels(study)
    curve = [s for s in study.eval.at_steps if start <= s < total and s > 0]
    weights = ["ema", "raw"] if study.eval.raw_weights and total else ["ema"]
    out = []
    for spec, metric in zip(study.metrics, labels["metrics"], strict=True):
        cls = study.registry.get("metric", spec["name"])
        points = [(FINAL, w) for w in weights] + ([(s, "ema") for s in curve] if cls.cheap else [])
        for sampler in [*labels["samplers"], REAL_DATA] if cls.needs_samples else [NO_SAMPLER]:
            for step, w in points:
                if sampler == REAL_DATA and (step != FINAL or w != "ema"):
                    continue
                if fresh or (cell.key, sampler, metric) in stale or not store.eval_done(cell.key, sampler, metric, step, w):
                    out.append((sampler, metric, step, w))
    return out


def measured(store: Store) -> tuple[dict[str, Rates], dict[str, Rates], dict[tuple[str, str], float]]:
    """The rates measured in the store, by kind of cell: per training step, per sample per network
    evaluation, and each metric's own seconds (its evaluation of the real-data floor or a diagnostic)."""
    train: dict[str, Rates] = {}
    cells = store.frame("SELECT config, step, train_seconds FROM cells WHERE step > 0 AND train_seconds > 0")
    cells["kind"] = [kind_of(json.loads(c), train=True) for c in cells.config]
    for kind, rows in cells.groupby("kind"):
        train[kind] = Rates(step=rows.train_seconds.sum() / rows.step.sum(), source=f"measured over {len(rows)} cells")
    evals = store.frame("SELECT c.config, m.sampler, m.metric, MAX(m.seconds) AS seconds, MAX(m.num_samples) AS n, "
                        "MAX(m.nfe) AS nfe FROM metrics m JOIN cells c ON c.key = m.cell WHERE m.seconds > 0 "
                        "GROUP BY m.cell, m.sampler, m.metric, m.step, m.weights")
    evals["kind"] = [kind_of(json.loads(c)) for c in evals.config]
    drawn = evals[~evals.sampler.isin([NO_SAMPLER, REAL_DATA]) & (evals.nfe > 0)]
    sampling = {k: Rates(nfe=rows.seconds.sum() / (rows.n * rows.nfe).sum(), source=f"measured over {len(rows)} evaluations")
                for k, rows in drawn.groupby("kind")}
    scored = evals[evals.sampler.isin([NO_SAMPLER, REAL_DATA])]
    # the median: not the first call's one-off costs (e.g. training the `classifier` features, cached after)
    metric = {(k, m): rows.seconds.median() for (k, m), rows in scored.groupby(["kind", "metric"])}
    return train, sampling, metric


def probe(study: Study, cell: Cell, tmp: Path) -> Rates:
    """Measure one cell in tmp: PROBE_STEPS training steps, then PROBE_CALLS network evaluations on a
    sampling batch."""
    config = copy.deepcopy(cell.config)
    config["train"]["steps"] = steps = min(PROBE_STEPS, config["train"]["steps"])
    parts = Parts.from_config(study.registry, config)
    data = parts.dataset.splits()  # after train_half, with the training split that models built from data need
    store = Store(tmp / "probe.db")
    try:
        store.add_cell(store.start_run("probe", None, "", {}, {}, {}), cell.key, config, cell.arm, cell.seed)
        (tmp / cell.key).mkdir(exist_ok=True)
        module = train_cell(cell.key, config, parts, data, tmp / cell.key, store, progress=False)
        per_step = (store.cell(cell.key) or {}).get("train_seconds", 0) / steps if parts.model.trainable else None
    finally:
        store.close()
    device = pick_device(config["train"]["device"])
    diffusion = parts.schedule.diffusion()
    denoiser = parts.model.denoiser(module, parts.target, diffusion, data.spec,
                                    autocast=device.type == "cuda" and config["train"]["bf16"])
    batch = min(study.eval.batch_size, max([draw_size(study)] + [1]))
    x = torch.randn((batch, *data.spec.shape), device=device)
    t = torch.full((batch,), diffusion.T - 1, dtype=torch.long, device=device)
    with torch.inference_mode():
        denoiser(x, t)
        started = time.perf_counter()
        for _ in range(PROBE_CALLS):
            denoiser(x, t).x0.sum().item()  # .item(): wait for an accelerator to finish
    per_nfe = (time.perf_counter() - started) / PROBE_CALLS / batch
    return Rates(step=per_step, nfe=per_nfe, source=f"probed: {steps} steps and {PROBE_CALLS} evaluations of a batch of {batch}")


def draw_size(study: Study, final: bool = True) -> int:
    """Samples one sampler draws per evaluation (evaluate_cell's n)."""
    sizes = [study.registry.from_table("metric", m).params.num_samples for m in study.metrics
             if study.registry.get("metric", m["name"]).needs_samples]
    return max(sizes + [study.eval.grid_samples if final else 0])


def nfe(study: Study, cell: Cell, sampler_label: str, measured_nfe: dict[str, int]) -> int:
    """Network evaluations per sample: the sampler's own count, else the one measured, else T."""
    diffusion = study.registry.from_table("schedule", cell.config["schedule"]).diffusion()
    spec = next(s for s in study.samplers if study.registry.label("sampler", s) == sampler_label)
    sampler: Sampler = study.registry.from_table("sampler", spec)  # type: ignore[assignment]
    try:
        count = sampler.nfe(diffusion, diffusion.T - 1)
    except (NotImplementedError, AttributeError):
        count = None
    return count or measured_nfe.get(sampler_label) or diffusion.T


def estimate(study: Study, works: list[Work], store: Store, tmp: Path) -> tuple[list[float], int, list[str]]:
    """Seconds of training, sampling and metrics, the evaluations whose metric time is not known, and one
    line per kind of cell saying where its rates come from."""
    train, sampling, metric_s = measured(store)
    nfes = dict(store.frame("SELECT sampler, MAX(nfe) AS nfe FROM metrics WHERE nfe > 0 GROUP BY sampler").values.tolist())
    seconds = [0.0, 0.0, 0.0]
    unmeasured = 0  # evaluations whose metric has no measured time for this kind of cell
    lines: dict[str, str] = {}
    for work in (w for w in works if w.steps or w.evals):
        config = work.cell.config
        step_kind, nfe_kind = kind_of(config, train=True), kind_of(config)
        draws = {(s, step, w) for s, _, step, w in work.evals if s not in (NO_SAMPLER, REAL_DATA)}
        if (work.steps and step_kind not in train) or (draws and nfe_kind not in sampling):
            rates = probe(study, work.cell, tmp)
            train.setdefault(step_kind, Rates(step=rates.step, source=rates.source))
            sampling.setdefault(nfe_kind, Rates(nfe=rates.nfe, source=rates.source))
        step_rate, nfe_rate = train.get(step_kind, Rates()), sampling.get(nfe_kind, Rates())
        seconds[0] += work.steps * (step_rate.step or 0.0)
        for sampler, step, w in draws:
            n = draw_size(study, final=step == FINAL and w == "ema")
            seconds[1] += n * nfe(study, work.cell, sampler, nfes) * (nfe_rate.nfe or 0.0)
        seconds[2] += sum(metric_s.get((nfe_kind, m), 0.0) for _, m, _, _ in work.evals)
        unmeasured += sum((nfe_kind, m) not in metric_s for _, m, _, _ in work.evals)
        said = [(f"{step_rate.step:.3g} s per training step", step_rate.source) if work.steps and step_rate.step else None,
                (f"{nfe_rate.nfe:.3g} s per sample per network evaluation", nfe_rate.source) if draws else None]
        said = [x for x in said if x]
        if said:
            model = study.registry.label("model", config["model"])
            sources = list(dict.fromkeys(source for _, source in said))
            rates = ", ".join(f"{r} ({src})" if len(sources) > 1 else r for r, src in said)
            lines[step_kind] = (f"  {config['data']['name']} / {model}, batch {config['train']['batch_size']}: {rates}"
                                + (f" ({sources[0]})" if len(sources) == 1 else ""))
    return seconds, unmeasured, list(lines.values())


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def dry_run(path: str | Path, profile: str | None = None, overrides: tuple[str, ...] | list[str] = (),
            executor: str | None = None, runs_dir: str | Path = "runs", extra_plugins: tuple[str, ...] | list[str] = (),
            recompute_stale: bool = False) -> list[str]:
    """The lines `ablate run --dry-run` prints: the cells, the pending evaluations and the time estimate."""
    study = load_study(path, profile, overrides, extra_plugins)
    if executor is not None and executor != study.executor["name"]:
        study.executor = {"name": executor}
    study.registry.from_table("executor", study.executor)  # validated as the run validates it
    with tempfile.TemporaryDirectory(prefix="ablate-dry-run-") as folder:
        tmp = Path(folder)
        store = snapshot(Path(runs_dir), tmp)
        try:
            store.set_identities(*eval_plugins(study))
            stale_cells = set(store.stale_cells({c.key: cell_plugins(study, c) for c in study.cells}))
            stale_evals = {(k, s, m) for k, s, m, _ in store.stale_evals([c.key for c in study.cells])}
            works = plan_cells(study, store, stale_cells, stale_evals)
            (train_s, sample_s, metric_s), unmeasured, rates = estimate(study, works, store, tmp)
        finally:
            store.close()
    counts = {s: sum(w.status == s for w in works) for s in ("new", "resume", "stale", "cached", "failed")}
    lines = [f"dry run of study {study.name}" + (f" (profile {profile})" if profile else "") +
             f": {len(study.cells)} cells x {len(study.samplers)} samplers x {len(study.metrics)} metrics; "
             "nothing is trained or written",
             "cells: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for w in works:
        what = {"new": f"{w.steps} steps to train", "stale": f"plugin code changed: {w.steps} steps to train again",
                "resume": f"{w.steps} steps left", "cached": "trained", "failed": "failed earlier; not retried"}[w.status]
        lines.append(f"  {w.status:<7} {w.cell.arm} seed {w.cell.seed} ({w.cell.key}): {what}, "
                     f"{len(w.evals)} evaluations pending")
    lines.append(f"evaluations pending: {sum(len(w.evals) for w in works)} (cell x sampler x metric, with the "
                 "real-data floors and the learning-curve points)")
    if (stale_cells or stale_evals) and not recompute_stale:
        lines.append("stale results: `ablate run` stops with their list unless --recompute-stale (the estimate assumes it)")
    unknown = f" + {unmeasured} evaluations not measured yet" if unmeasured else ""
    lines.append(f"estimated time: {duration(train_s + sample_s + metric_s)} (training {duration(train_s)}, "
                 f"sampling {duration(sample_s)}, metrics {duration(metric_s)}{unknown}), one cell after another")
    return lines + rates
