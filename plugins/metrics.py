"""Metrics: FID and KID (torchmetrics) on standardised features, memorisation, the x0 error by timestep,
and the fit to a known mixture. The feature extractors live in ablate_plugins.features, precision/recall/
density/coverage and MiFID in ablate_plugins.fidelity."""

from __future__ import annotations

import math
import warnings

import torch
from ablate_plugins.features import ACC, Z_UNIT, Extractor, FeatureMetric
from ablate_plugins.fidelity import PRDC, MiFID
from pydantic import Field
from torch import Tensor

from ablate import AblateError, DataSpec, EvalContext, KeySpec, Metric, hookimpl


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
            "mean": KeySpec("lower", "diagnostic", nonnegative=True, description="mean of the per-t errors")}

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


class GMMFit(Metric):
    """How well samples reproduce the true 2-D mixture: NLL, modes covered, mode-weight error, spread.

    Lifted data (spec.lift = P): samples are scored through z = P^T x, and off_manifold is the energy
    ||(I - P P^T) x||^2 the samples put off the data's plane. The headline is the NLL under the true
    mixture: off-mode samples raise it steeply, which max_weight_error does not see; note it would also
    reward samples collapsed onto the means, which std_ratio < 1 shows."""

    name = "gmm_fit"
    keys = {
        "nll": KeySpec("lower", "headline", description="mean negative log-likelihood of the samples under the true mixture"),
        "modes_covered": KeySpec("higher", "diagnostic", nonnegative=True,
                                 description="share of modes that get at least min_share of their true weight"),
        "max_weight_error": KeySpec("lower", "diagnostic", nonnegative=True,
                                    description="largest |sample share - true weight| over the modes"),
        "off_mode_fraction": KeySpec("lower", "diagnostic", nonnegative=True,
                                     description="share of samples outside the 0.999 ellipse of their nearest mode"),
        "off_manifold": KeySpec("lower", "diagnostic", nonnegative=True,
                                description="mean ||(I - P P^T) x||^2: energy off the data's plane (lifted data only)"),
        "std_ratio": KeySpec("none", "diagnostic", description="spread within a mode / its true std (1 is right)"),
    }

    class Params(Metric.Params):
        num_samples: int = Field(4000, ge=2, description="samples generated per sampler")
        min_share: float = Field(0.25, gt=0, description="a mode is covered when it gets this share of its true weight")

    def check(self, spec: DataSpec) -> None:
        if spec.mixture is None:
            raise AblateError(f"gmm_fit needs a dataset with a known mixture (e.g. gmm2d); {spec.name!r} has none")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        mix = ctx.data.spec.mixture
        if mix is None or samples is None:
            raise AblateError(f"gmm_fit needs a dataset with a known mixture (gmm2d, gmm_lifted), not {ctx.data.spec.name!r}",
                              key="metric.name")
        x = samples.double().cpu().flatten(1)
        lifted = {}
        if ctx.data.spec.lift is not None:
            lift = ctx.data.spec.lift
            x, flat = x @ lift, x
            lifted["off_manifold"] = float((flat - x @ lift.T).pow(2).sum(1).mean())
        x = x[:, None, :]
        z2 = ((x - mix.means[None]) / mix.stds[None]).pow(2).sum(-1)  # [N, K] squared Mahalanobis
        log_comp = -0.5 * z2 - mix.stds.log().sum(-1)[None] - math.log(2 * math.pi) + mix.weights.log()[None]
        k = log_comp.argmax(1)
        on_mode = z2.gather(1, k[:, None]).squeeze(1) < 13.8155  # chi2(2) 0.999 quantile
        share = torch.bincount(k, minlength=len(mix.weights)).double() / x.shape[0]
        stds = [x[k == j, 0].std(0).mean().item() / mix.stds[j].mean().item() for j in range(len(mix.weights)) if (k == j).sum() > 2]
        return {
            "modes_covered": float((share >= self.params.min_share * mix.weights).double().mean()),
            "max_weight_error": float((share - mix.weights).abs().max()),
            "off_mode_fraction": float(1 - on_mode.double().mean()),
            "nll": float(-torch.logsumexp(log_comp, 1).mean()),
            **({"std_ratio": float(sum(stds) / len(stds))} if stds else {}),  # no mode with 3 samples: undefined, left out
            **lifted,
        }


@hookimpl
def ablate_metrics() -> list[type]:
    return [FID, KID, PRDC, MiFID, NearestNeighbour, Spread, X0ErrorByT, GMMFit]
