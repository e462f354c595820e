"""Evaluation of one trained cell: every sampler x metric, each result stored as soon as it exists.

What makes the numbers comparable: samples are scored as they would be saved (clamped and 8-bit
quantised for images); every sampler of every arm at one seed starts from the same x_T and draws
the same noise stream (common random numbers, so comparisons are paired); and every sample metric
is also computed on held-out real images (the floor) and, for image data, on the calibration ladder
(ablate.ladder), printed beside the models' numbers.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ablate import ladder
from ablate.cell import Parts, pick_device
from ablate.diffusion import Diffusion
from ablate.fast import fast_denoiser
from ablate.faults import Units, isolated
from ablate.interfaces import (
    KINDS,
    REFERENCE,
    Data,
    DataSpec,
    Denoiser,
    EvalContext,
    Metric,
    Prediction,
    Sampler,
)
from ablate.store import FINAL, NO_SAMPLER, REAL_DATA, Store
from ablate.study import Study


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


def as_saved(x: Tensor, spec: DataSpec) -> Tensor:
    """What a PNG of the samples would hold: images clamped to [-1, 1] and quantised to 8-bit levels.
    Other data (points) has no fixed range and is scored as it is."""
    if not spec.is_image:
        return x.float()
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


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

    step/weights: which weights these are (the final EMA ones by default); at an intermediate step
    only the cheap metrics run, and the real-data floor and sample grids belong to the final weights."""
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
    n = max([m.params.num_samples for _, m in metrics if m.needs_samples] + [study.eval.grid_samples if final else 0])
    if step != FINAL:
        metrics = [(name, m) for name, m in metrics if m.cheap]
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
        if final and metric.needs_samples and not done(REAL_DATA, name):
            against_train = metric.compares_with == "train" or study.eval.reference == "train"
            floor, real = ladder.floor(saved["test"], saved["train"], against_train, config["seed"])
            floor = floor[: metric.params.num_samples]
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
        todo = [(name, m) for name, m in metrics if m.needs_samples and not done(s_label, name)]
        grid_file = samples_path(run_dir, s_label)
        want_grid = final and study.eval.grid_samples > 0 and not grid_file.exists()
        if not todo and not want_grid:
            continue
        try:  # a sampler that fails fails each of its evaluations, with one reason
            samples, nfe, seconds = draw_samples(registry.from_table("sampler", spec), denoiser, diffusion, data.spec, n,
                                                 study.eval.batch_size, config["seed"], device, f"  sample {s_label}", progress)
        except Exception as exc:
            if not isolated(exc):
                raise
            units.fail([(s_label, name) for name, _ in todo], exc, ("sampler", spec["name"]), f"the sample grid of {s_label}")
            continue
        if want_grid:
            torch.save(samples[: study.eval.grid_samples].clone(), grid_file)
        for m_label, metric in todo:
            k = metric.params.num_samples
            if units.score(s_label, m_label, metric, (samples[:k], real_for(metric), context(s_label)), k, nfe, seconds * k / n):
                units.summary[-1] += f" ({nfe} NFE)"
    return units.summary
