"""Evaluation of one trained cell: every sampler x metric, each result stored as soon as it exists.

What makes the numbers comparable: samples are scored as they would be saved (clamped and 8-bit
quantised for images); every sampler of every arm at one seed starts from the same x_T and draws
the same noise stream (common random numbers, so comparisons are paired); and every sample metric
is also computed on held-out real images that no model trained on (the floor, drawn afresh at each seed so
that its spread over seeds is the metric's own noise at that count) and, for image data, on the
calibration ladder (ablate.ladder), printed beside the models' numbers.

Learning curves (`eval.at_steps`): the cheap metrics at each step, and with `eval.curve_samples` the sample
metrics that declare a headline key, at that smaller count under one sampler; the final weights get the same
small-count evaluation (at step = train.steps, beside the full-count FINAL row) with its own floor.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ablate import halves, ladder
from ablate.cell import Parts, pick_device
from ablate.datatypes import REFERENCE, Data, DataSpec, Denoiser, EvalContext, Prediction, as_saved
from ablate.diffusion import Diffusion
from ablate.fast import fast_denoiser
from ablate.faults import Units, isolated
from ablate.interfaces import KINDS, Metric, Sampler
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA, Store
from ablate.study import Study
from ablate.train import save_atomic


class CountingDenoiser:
    """Counts network evaluations per batch and ticks a progress bar: the NFE is measured, not assumed."""

    def __init__(self, inner: Denoiser, bar: tqdm) -> None:
        self.inner, self.bar, self.calls = inner, bar, 0

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        self.calls += 1
        self.bar.update(1)
        return self.inner(x_t, t)


class ClippedDenoiser:
    """DDPM's `clip_denoised` at the seam: x0_hat clamped to [-1, 1], eps_hat recomputed from it,
    so every sampler, a third-party one included, samples as the reference code does."""

    def __init__(self, inner: Denoiser, diffusion: Diffusion) -> None:
        self.inner, self.diffusion = inner, diffusion

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        x0 = self.inner(x_t, t).x0.clamp(-1, 1)
        return Prediction(x0=x0, eps=self.diffusion.eps_from_x0(x_t, t, x0))


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def floor_images(other: Tensor, n: int, seed: int) -> Tensor:
    """The floor's n real images: a draw that differs between seeds (every arm at one seed gets the same one),
    so the floor's spread over seeds is what re-drawing real images moves the metric by. All of the split
    when it has no more than n."""
    if other.shape[0] <= n:
        return other
    gen = torch.Generator().manual_seed(_seed(seed, "floor") % 2**63)
    return other[torch.randperm(other.shape[0], generator=gen)[:n]]


def curve_sampler(study: Study) -> dict[str, Any]:
    """The sampler of the headline's learning curve: `eval.curve_sampler` (a label), else the first."""
    return next((s for s in study.samplers if study.registry.label("sampler", s) == study.eval.curve_sampler),
                study.samplers[0])


def headline(metric: Metric | type[Metric]) -> bool:
    """A sample metric that declares a headline key: what the learning curve evaluates at `curve_samples`."""
    return metric.needs_samples and any(spec.role == "headline" for spec in metric.keys.values())


def samples_path(run_dir: Path, sampler: str) -> Path:
    return run_dir / f"samples-{hashlib.sha1(sampler.encode()).hexdigest()[:10]}.pt"


def _nfe_total(sampler: Sampler, diffusion: Diffusion) -> int | None:
    """The sampler's own NFE count sizes the progress bar; it is optional (the core counts calls)."""
    try:
        return sampler.nfe(diffusion, diffusion.T - 1)
    except (NotImplementedError, AttributeError):
        return None


def draw_samples(sampler: Sampler, denoiser: Denoiser, diffusion: Diffusion, spec: DataSpec, n: int, batch_size: int,
                 seed: int, device: torch.device, desc: str, progress: bool) -> tuple[Tensor, int, float]:
    """n samples as saved, the NFE per sample and the seconds taken. Batch b starts from x_T and a
    noise stream seeded by (seed, b) alone: the same for every sampler and every arm at this seed."""
    batches = list(range(0, n, batch_size))
    per_batch = _nfe_total(sampler, diffusion)
    bar = tqdm(total=per_batch * len(batches) if per_batch else None, desc=desc, unit="nfe",
               disable=None if progress else True, leave=False)
    counter = CountingDenoiser(denoiser, bar)
    chunks, t0 = [], time.time()
    with bar:  # closed too when the sampler raises
        for b, start in enumerate(batches):
            gen = torch.Generator(device).manual_seed(_seed(seed, "sampling", b) % 2**63)
            x = torch.randn((min(batch_size, n - start), *spec.shape), generator=gen, device=device)
            with torch.inference_mode():  # no autograd bookkeeping on any of the T steps
                chunks.append(sampler.sample(counter, diffusion, x, diffusion.T - 1, gen).float().cpu())
    return as_saved(torch.cat(chunks), spec), counter.calls // len(batches), time.time() - t0


def evaluate_cell(key: str, config: dict[str, Any], study: Study, parts: Parts, data: Data, module: nn.Module,
                  run_dir: Path, store: Store, cache_dir: Path, progress: bool = True, step: int = FINAL,
                  weights: str = "ema") -> list[str]:
    """Run the missing sampler x metric pairs of a cell's weights; returns one short summary per new result.
    Each pair is a unit (ablate.faults): a plugin that raises or returns a bad result fails only its own.

    step/weights: which weights these are (the final EMA ones by default). At a learning-curve step only the
    cheap metrics run (before the last step: the final evaluation has them), and with `eval.curve_samples` the
    headline sample metrics at that count under the curve sampler, with their floor at the last step. The
    full-count floor and the sample grids belong to the final weights."""
    registry = study.registry
    final = step == FINAL and weights == "ema"
    device = pick_device(config["train"]["device"])
    diffusion = parts.schedule.diffusion()
    autocast = device.type == "cuda" and config["train"]["bf16"]
    denoiser = fast_denoiser(parts.model.denoiser(module, parts.target, diffusion, data.spec, autocast=autocast),
                             config["train"], device)
    clip = study.eval.clip_x0 if study.eval.clip_x0 is not None else data.spec.is_image
    if clip:
        denoiser = ClippedDenoiser(denoiser, diffusion)
    metrics = [(registry.label("metric", m), registry.from_table("metric", m)) for m in study.metrics]
    counts = {name: m.params.num_samples for name, m in metrics}
    curve = registry.label("sampler", curve_sampler(study)) if step != FINAL and study.eval.curve_samples else None
    floors = final
    if step != FINAL:
        last = step >= config["train"]["steps"]
        heads = {name for name, m in metrics if curve and headline(m)}
        counts |= {name: min(study.eval.curve_samples or 0, counts[name]) for name in heads}
        metrics = [(name, m) for name, m in metrics if (m.cheap and not last) or name in heads]
        floors = bool(heads) and last
    n = max([counts[name] for name, m in metrics if m.needs_samples] + [study.eval.grid_samples if final else 0])
    units = Units(store, key, registry, [(k.name, config[k.section]["name"]) for k in KINDS.values() if k.cell], step, weights)

    def done(sampler: str, name: str) -> bool:
        return store.eval_done(key, sampler, name, step, weights)

    saved = {"train": as_saved(data.train, data.spec), "test": as_saved(data.test, data.spec)}  # once per cell

    def context(tag: str) -> EvalContext:
        gen = torch.Generator(device).manual_seed(_seed(config["seed"], tag) % 2**63)
        return EvalContext(data=data, denoiser=denoiser, diffusion=diffusion, device=device, cache_dir=cache_dir,
                           generator=gen, extra={REFERENCE: saved[study.eval.reference]})

    def real_for(metric: Metric) -> Tensor:
        """The split this metric compares with."""
        return saved["train" if metric.compares_with == "train" else study.eval.reference]

    for name, metric in metrics:  # model diagnostics: no sampler involved
        if not metric.needs_samples and not done(NO_SAMPLER, name):
            units.score(NO_SAMPLER, name, metric, (None, data.test, context(name)), metric.params.num_samples, None)

    for name, metric in metrics:  # the floor: held-out images in place of samples, at the same count (or all there are)
        if floors and metric.needs_samples and not done(REAL_DATA, name):
            against_train = metric.compares_with == "train" or study.eval.reference == "train"
            floor, real = ladder.floor(saved["test"], saved["train"], against_train, config["seed"])
            floor = floor[: counts[name]]
            units.score(REAL_DATA, name, metric, (floor, real, context(name)), floor.shape[0], 0)

    rungs = [(label, name, m) for label in ladder.labels(data) for name, m in metrics
             if final and m.needs_samples and not done(label, name)]
    if rungs:  # the calibration ladder: training images degraded in known ways, at each metric's count
        images = ladder.build(data, max(m.params.num_samples for _, _, m in rungs), config["seed"],
                              lambda x: as_saved(x, data.spec))
        for label, name, metric in rungs:
            k = metric.params.num_samples
            units.score(label, name, metric, (images[label][:k], real_for(metric), context(label)), k, 0)

    for spec in study.samplers:
        s_label = registry.label("sampler", spec)
        todo = [(name, m) for name, m in metrics if m.needs_samples and not done(s_label, name)
                and (step == FINAL or m.cheap or s_label == curve)]
        grid_file = samples_path(run_dir, s_label)
        want_grid = final and study.eval.grid_samples > 0 and not grid_file.exists()
        halves_file = halves.samples_path(run_dir, s_label)
        want_halves = final and halves.wanted(config) and not halves_file.exists()
        if not todo and not want_grid and not want_halves:
            continue
        try:  # a sampler that fails fails each of its evaluations, with one reason
            sampler = registry.from_table("sampler", spec)
            if want_halves:  # one batch of their own: both halves' models start from the same x_T, whatever n is
                drawn = draw_samples(sampler, denoiser, diffusion, data.spec, halves.SAMPLES, halves.SAMPLES,
                                     config["seed"], device, f"  halves {s_label}", progress)[0]
                save_atomic({"samples": drawn}, halves_file)
                units.summary.append(f"{s_label}: {halves.SAMPLES} samples for the two-halves test")
            samples, nfe, seconds = draw_samples(sampler, denoiser, diffusion, data.spec, n, study.eval.batch_size,
                                                 config["seed"], device, f"  sample {s_label}", progress) \
                if todo or want_grid else (None, 0, 0.0)
        except Exception as exc:
            if not isolated(exc):
                raise
            units.fail([(s_label, name) for name, _ in todo], exc, ("sampler", spec["name"]),
                       f"the {'sample grid' if want_grid else 'generalisation samples'} of {s_label}")
            continue
        if want_grid:
            torch.save(samples[: study.eval.grid_samples].clone(), grid_file)
        for m_label, metric in todo:
            k = counts[m_label]
            if units.score(s_label, m_label, metric, (samples[:k], real_for(metric), context(s_label)), k, nfe, seconds * k / n):
                units.summary[-1] += f" ({nfe} NFE)"
    return units.summary
