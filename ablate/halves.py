"""The generalisation test of Kadkhodaie et al. (ICLR 2024): one arm trained on two disjoint halves of its
training split (`data.train_half = "a"` and `"b"`), compared through the samples that the two models draw
from the same noise.

At one seed the two halves' cells share their initialisation, their training random numbers and, when
sampled, x_T and the sampler's noise (ablate.train, ablate.evaluate): only the data differs. A model that
generalises learns nearly the same denoiser from either half, so sample i of one is nearly sample i of
the other; a model that memorises draws its own training images, far from the other half's, and the two
models' samples are as far apart as unrelated images. Each half's cell draws `SAMPLES` samples per sampler
in one batch of their own (the same whatever the study's sample counts), saved beside its sample grid;
once both halves of a pair have them, the run stores for each half's cell, per sampler, under the metric
label `HALVES`:

- halves_distance: mean over i of the RMS distance between sample i of half a and sample i of half b;
- unrelated_distance: the same between sample i of a and sample i + 1 of b (samples from different noise):
  the distance of unrelated samples, for scale;
- nn_own_half, nn_other_half: mean RMS distance of the cell's samples to the nearest image of its own
  half, and of the other half;
- held_out_nn: mean RMS distance of held-out images (up to `HELD_OUT`) to the nearest image of the cell's
  own half: what "near a training image" means for a new image.

Distances are RMS per value (|x - y| / sqrt(D)) in data units, between images as saved (8-bit).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ablate.datatypes import Data, as_saved
from ablate.faults import isolated, last_line

if TYPE_CHECKING:
    import pandas as pd

    from ablate.store import Store
    from ablate.study import Cell, Study

HALVES = "two_halves"  # the metric label of the generalisation rows (not a plugin: computed by the run)
SAMPLES = 256  # samples per half's cell and sampler, drawn from the same noise in both
HELD_OUT = 1000  # held-out images whose nearest training image sets the scale
KEYS = ("halves_distance", "unrelated_distance", "nn_own_half", "nn_other_half", "held_out_nn")
_HALF = re.compile(r", train_half=[ab]\b|\btrain_half=[ab](, )?")


def samples_path(run_dir: Path, sampler: str) -> Path:
    """Where a half's cell keeps its `SAMPLES` samples of one sampler (beside its sample grid)."""
    return run_dir / f"halves-{hashlib.sha1(sampler.encode()).hexdigest()[:10]}.pt"


def wanted(config: dict[str, Any]) -> bool:
    """Whether a cell is one half of a pair: it trains on `data.train_half`."""
    return bool(config["data"].get("train_half"))


def pair_arm(arm: str) -> str:
    """The arm label without its train_half part: 'x0 + train_half=a' -> 'x0', 'digits(train_half=b)' -> 'digits'."""
    parts = [p for p in arm.split(" + ") if not re.fullmatch(r"train_half=[ab]", p)]
    return " + ".join(_HALF.sub("", p).replace("()", "") for p in parts) or "default"


def pairs(study: Study) -> list[tuple[str, Cell, Cell]]:
    """(arm without train_half, the cell of half a, that of half b) for each config and seed run on both halves."""
    found: dict[str, dict[str, Cell]] = {}
    for cell in study.cells:
        if wanted(cell.config):
            rest = {**cell.config, "data": {k: v for k, v in cell.config["data"].items() if k != "train_half"}}
            found.setdefault(json.dumps(rest, sort_keys=True), {})[cell.config["data"]["train_half"]] = cell
    return [(pair_arm(h["a"].arm), h["a"], h["b"]) for h in found.values() if "a" in h and "b" in h]


def drawn(study: Study, cell: Cell, runs_dir: Path) -> bool:
    """Whether a cell has the samples the generalisation test needs (a cell that is no half needs none)."""
    if not wanted(cell.config):
        return True
    return all(samples_path(runs_dir / cell.key, study.registry.label("sampler", s)).exists() for s in study.samplers)


def nearest(x: Tensor, ref: Tensor, chunk: int = 1024) -> Tensor:
    """RMS (per value) distance of each row of x to its nearest row of ref, exact: a copy comes out at 0."""
    x, ref = x.flatten(1).double(), ref.flatten(1).double()
    exact = "donot_use_mm_for_euclid_dist"
    return torch.cat([torch.cdist(part, ref, compute_mode=exact).min(1).values for part in x.split(chunk)]) / math.sqrt(x.shape[1])


def rms(x: Tensor, y: Tensor) -> Tensor:
    """RMS (per value) distance between matching rows of x and y."""
    return (x.flatten(1).double() - y.flatten(1).double()).pow(2).mean(1).sqrt()


def measure(samples_a: Tensor, samples_b: Tensor, train_a: Tensor, train_b: Tensor, held_out: Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """The rows of half a's cell and of half b's (see the module docstring); all tensors as saved."""
    shared = {"halves_distance": float(rms(samples_a, samples_b).mean()),
              "unrelated_distance": float(rms(samples_a, samples_b.roll(1, 0)).mean())}
    held_out = held_out[:HELD_OUT]
    return tuple({**shared, "nn_own_half": float(nearest(x, own).mean()), "nn_other_half": float(nearest(x, other).mean()),
                  "held_out_nn": float(nearest(held_out, own).mean())}
                 for x, own, other in ((samples_a, train_a, train_b), (samples_b, train_b, train_a)))  # type: ignore[return-value]


def compare(study: Study, store: Store, runs_dir: Path, load: Callable[[dict[str, Any]], Data]) -> list[str]:
    """Store the generalisation rows of every pair of halves (per sampler) whose two cells have drawn their
    samples and that has no rows yet; one summary line per new result or pair still waiting. load: a cell
    config's data (its splits, after train_half)."""
    lines = []
    samplers = [study.registry.label("sampler", s) for s in study.samplers]
    for arm, a, b in pairs(study):
        for sampler in samplers:
            if store.eval_done(a.key, sampler, HALVES) and store.eval_done(b.key, sampler, HALVES):
                continue
            name = f"generalisation (two halves) {arm} seed {a.seed}, {sampler}"
            files = [samples_path(runs_dir / c.key, sampler) for c in (a, b)]
            missing = [c.key for c, f in zip((a, b), files, strict=True) if not f.exists()]
            if missing:
                lines.append(f"{name}: waiting for the samples of {', '.join(missing)}")
                continue
            t0 = time.time()
            try:
                data_a, data_b = load(a.config), load(b.config)
                result = measure(*(torch.load(f, weights_only=True)["samples"] for f in files), as_saved(data_a.train, data_a.spec),
                               as_saved(data_b.train, data_b.spec), as_saved(data_a.test, data_a.spec))
            except Exception as exc:  # an unreadable samples file: the rest of the run is kept
                if not isolated(exc):
                    raise
                lines.append(f"{name}: FAILED ({last_line(exc)})")
                continue
            for cell, values in zip((a, b), result, strict=True):
                store.add_metric(cell.key, sampler, HALVES, values, SAMPLES, None, time.time() - t0)
            own, other = ((result[0][k] + result[1][k]) / 2 for k in ("nn_own_half", "nn_other_half"))
            lines.append(f"{name}: halves distance {result[0]['halves_distance']:.4g} (unrelated samples "
                         f"{result[0]['unrelated_distance']:.4g}); nearest own / other half {own:.4g} / {other:.4g}")
    return lines


def rows(store: Store, run_id: int, samplers: list[str] | None) -> pd.DataFrame:
    """The generalisation rows of a run's cells (arm, seed, cell, sampler, key, value), of its samplers."""
    frame = store.frame("SELECT rc.arm, rc.seed, m.cell, m.sampler, m.key, m.value FROM run_cells rc JOIN metrics m "
                        "ON m.cell = rc.cell WHERE rc.run=? AND m.metric=? AND m.step=-1 AND m.weights='ema' "
                        "ORDER BY rc.rowid, m.sampler, m.key", (run_id, HALVES))
    if samplers is not None:
        frame = frame[frame.sampler.isin(samplers)]
    return frame.reset_index(drop=True)
