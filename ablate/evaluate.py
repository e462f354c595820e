"""Evaluation of one trained cell: every sampler x metric, each result stored as soon as it exists."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ablate.interfaces import Data, Denoiser, EvalContext, Prediction
from ablate.store import NO_SAMPLER, Store
from ablate.study import Study, label
from ablate.train import Parts, pick_device


class CountingDenoiser:
    """Counts network evaluations per batch and ticks a progress bar: the NFE is measured, not assumed."""

    def __init__(self, inner: Denoiser, bar: tqdm) -> None:
        self.inner, self.bar, self.calls = inner, bar, 0

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        self.calls += 1
        self.bar.update(1)
        return self.inner(x_t, t)


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def samples_path(run_dir: Path, sampler: str) -> Path:
    return run_dir / f"samples-{hashlib.sha1(sampler.encode()).hexdigest()[:10]}.pt"


def evaluate_cell(key: str, config: dict[str, Any], study: Study, parts: Parts, data: Data, module: nn.Module,
                  run_dir: Path, store: Store, cache_dir: Path, progress: bool = True) -> list[str]:
    """Run the missing sampler x metric pairs of a cell; returns one short summary per new result."""
    registry = study.registry
    device = pick_device(config["train"]["device"])
    diffusion = parts.schedule.diffusion()
    autocast = device.type == "cuda" and config["train"]["bf16"]
    denoiser = parts.model.denoiser(module, parts.target, diffusion, data.spec)
    if hasattr(denoiser, "autocast"):
        denoiser.autocast = autocast
    metrics = [(label(registry, "metric", m), registry.from_table("metric", m)) for m in study.metrics]
    summary = []

    def context(tag: str) -> EvalContext:
        gen = torch.Generator(device).manual_seed(_seed(config["seed"], tag) % 2**63)
        return EvalContext(data=data, denoiser=denoiser, diffusion=diffusion, device=device, cache_dir=cache_dir, generator=gen)

    for name, metric in metrics:  # model diagnostics: no sampler involved
        if not metric.needs_samples and not store.eval_done(key, NO_SAMPLER, name):
            t0 = time.time()
            values = metric.evaluate(None, data.test, context(name))
            store.add_metric(key, NO_SAMPLER, name, values, metric.params.num_samples, None, time.time() - t0)
            summary.append(f"{name} done")

    for spec in study.samplers:
        s_label = label(registry, "sampler", spec)
        todo = [(n, m) for n, m in metrics if m.needs_samples and not store.eval_done(key, s_label, n)]
        grid_file = samples_path(run_dir, s_label)
        want_grid = study.eval.grid_samples > 0 and not grid_file.exists()
        if not todo and not want_grid:
            continue
        sampler = registry.from_table("sampler", spec)
        n = max([m.params.num_samples for _, m in todo] + [study.eval.grid_samples])
        ctx = context(s_label)
        batches = list(range(0, n, study.eval.batch_size))
        T = diffusion.T
        bar = tqdm(total=len(batches) * sampler.nfe(diffusion, T - 1), desc=f"  sample {s_label}", unit="nfe",
                   disable=None if progress else True, leave=False)
        counter = CountingDenoiser(denoiser, bar)
        chunks, t0 = [], time.time()
        for start in batches:
            b = min(study.eval.batch_size, n - start)
            x = torch.randn((b, *data.spec.shape), generator=ctx.generator, device=device)
            with torch.inference_mode():  # no autograd bookkeeping on any of the T steps
                chunks.append(sampler.sample(counter, diffusion, x, T - 1, ctx.generator).float().cpu())
        bar.close()
        samples, seconds = torch.cat(chunks), time.time() - t0
        nfe = counter.calls // len(batches)
        if want_grid:
            torch.save(samples[: study.eval.grid_samples].clone(), grid_file)
        for m_label, metric in todo:
            k = metric.params.num_samples
            real = data.test if getattr(metric.params, "reference", "train") == "test" else data.train
            values = metric.evaluate(samples[:k], real, ctx)
            store.add_metric(key, s_label, m_label, values, k, nfe, seconds * k / n)
            main = next(iter(values.items()))
            summary.append(f"{s_label} {main[0]}={main[1]:.4g} ({nfe} NFE)")
    return summary
