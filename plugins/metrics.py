"""Metrics: FID and KID (torchmetrics) on standardised features, memorisation, spread and the x0 error by
timestep. The feature extractors live in ablate_plugins.features, precision/recall/density/coverage and
MiFID in ablate_plugins.fidelity, the point-data metrics in ablate_plugins.point_metrics."""

from __future__ import annotations

import math
import warnings

import torch
from ablate_plugins.features import ACC, Z_UNIT, Extractor, FeatureMetric
from ablate_plugins.fidelity import PRDC, MiFID
from pydantic import Field
from torch import Tensor

from ablate import AblateError, EvalContext, KeySpec, Metric, hookimpl


class FID(FeatureMetric):
    """Frechet distance between feature statistics of samples and real data (torchmetrics).

    Depends on the sample count and the features: classifier/raw FIDs are not comparable with
    published Inception FIDs."""

    name = "fid"
    keys = {"fid": KeySpec("lower", "headline", nonnegative=True, description="Frechet distance of feature statistics",
                           unit=f"squared Frechet distance of {Z_UNIT}"),
            "classifier_test_acc": ACC}

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.fid import FrechetInceptionDistance

        kwargs = self._inception_kwargs() if extractor.inception else {}
        return FrechetInceptionDistance(feature=extractor.feature, **kwargs)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        metric, extractor = self._build(ctx, samples.shape[0])
        self._score(metric, extractor, samples, real)
        return {"fid": float(metric.compute()), **extractor.extra}


class KID(FeatureMetric):
    """Kernel (polynomial MMD) distance between feature sets: unbiased, so usable at small sample counts."""

    name = "kid"
    keys = {"kid": KeySpec("lower", "headline", nonnegative=True, description="kernel distance (unbiased MMD^2)",
                           unit=f"squared MMD of {Z_UNIT}, polynomial kernel (x.y/d + 1)^3"),
            "kid_std": KeySpec(description="spread of KID over its subsets", unit="as kid"),
            "classifier_test_acc": ACC}

    class Params(FeatureMetric.Params):
        subset_size: int = Field(500, ge=2, description="subset size of the KID estimate (capped at the sample count)")
        subsets: int = Field(50, ge=1, description="number of subsets averaged")

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.kid import KernelInceptionDistance

        kwargs = self._inception_kwargs() if extractor.inception else {}
        size = min(self.params.subset_size, n)
        with warnings.catch_warnings():  # torchmetrics warns that KID keeps every feature: it must, at these sizes
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            return KernelInceptionDistance(feature=extractor.feature, subsets=self.params.subsets, subset_size=size, **kwargs)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        with torch.random.fork_rng():
            torch.manual_seed(0)  # KID draws its subsets with the global RNG
            metric, extractor = self._build(ctx, min(samples.shape[0], real.shape[0]))
            self._score(metric, extractor, samples, real)
            mean, std = metric.compute()
        return {"kid": float(mean), "kid_std": float(std), **extractor.extra}


class NearestNeighbour(Metric):
    """Distance from each sample to its nearest training image: a model that copies its training set
    scores far below held-out real images (the real-data row of this metric)."""

    name = "nearest_neighbour"
    compares_with = "train"
    keys = {"nn_distance": KeySpec(description="mean RMS distance (per value) to the nearest training image",
                                   unit="data values on their [-1, 1] scale, RMS per value"),
            "close_copies": KeySpec("lower", "diagnostic", nonnegative=True,
                                    description="share of samples nearer a training image than 99% of held-out images are",
                                    unit="share of samples")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        train = real.flatten(1).double()  # compares_with = "train": `real` is the training split as saved
        dist = _nearest(samples.flatten(1).double(), train)
        held_out = _nearest(ctx.data.test.flatten(1).double(), train)
        threshold = torch.quantile(held_out, 0.01)
        return {"nn_distance": float(dist.mean()), "close_copies": float((dist < threshold).double().mean())}


def _nearest(x: Tensor, ref: Tensor, chunk: int = 1024) -> Tensor:
    """RMS (per value) distance of each row of x to its nearest row of ref."""
    exact = "donot_use_mm_for_euclid_dist"  # a copy must come out at distance 0, not at rounding noise
    return torch.cat([torch.cdist(part, ref, compute_mode=exact).min(1).values for part in x.split(chunk)]) / math.sqrt(x.shape[1])


class Spread(Metric):
    """How far samples spread around their mean, against the reference data's spread: a sampler
    that regresses to the mean (one jump from x_T returns E[x0 | x_T], the data mean) scores near 0."""

    name = "spread"
    keys = {"spread_ratio": KeySpec(description="RMS distance of the samples from their mean / the same for the reference (1: as spread as the data)")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None

        def rms(x: Tensor) -> float:
            x = x.flatten(1).double()
            return float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())

        return {"spread_ratio": rms(samples) / rms(real)}


class X0ErrorByT(Metric):
    """Mean squared error of the model's x0 estimate on held-out data at several t: where a target fails."""

    name = "x0_error_by_t"
    needs_samples = False
    cheap = True
    keys = {"t=*": KeySpec("lower", "curve", nonnegative=True, description="E||x0_hat - x0||^2 per value at timestep t"),
            "mean": KeySpec("lower", "diagnostic", nonnegative=True, description="mean x0 error over timesteps")}

    class Params(Metric.Params):
        num_samples: int = Field(512, ge=2, description="held-out points used at each t")
        timesteps: list[int] | None = Field(None, description="timestep indices (default: 12 spread over 0..T-1)")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        T = ctx.diffusion.T
        ts = self.params.timesteps or sorted({round(T ** (i / 11)) - 1 for i in range(12)} | {T // 2, T - 1})
        x0 = ctx.data.test[: self.params.num_samples].to(ctx.device)
        out = {}
        for t in ts:
            if not 0 <= t < T:
                raise AblateError(f"timestep {t} is outside 0..{T - 1}", key="metric.timesteps")
            tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
            eps = torch.randn(x0.shape, generator=ctx.generator, device=ctx.generator.device).to(x0.device)
            pred = ctx.denoiser(ctx.diffusion.q_sample(x0, tt, eps), tt)
            out[f"t={t}"] = float((pred.x0.float() - x0).pow(2).mean())
        out["mean"] = sum(out.values()) / len(out)
        return out


@hookimpl
def ablate_metrics() -> list[type]:
    return [FID, KID, PRDC, MiFID, NearestNeighbour, Spread, X0ErrorByT]
