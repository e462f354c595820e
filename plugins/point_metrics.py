"""Metrics of point data with a known 2-D mixture (gmm2d, gmm_lifted): how far the samples are from
held-out points (sliced Wasserstein, the headline) and how they fit the mixture (NLL, modes, spread)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from ablate import AblateError, DataSpec, EvalContext, KeySpec, Metric, hookimpl

PLANE = "distance in data units (the 2-D plane)"
SHARE = "share of samples"


def plane_directions(n: int, generator: torch.Generator) -> Tensor:
    """n unit vectors of the plane at angles offset + k pi / n: each uniform on the half circle (a
    direction and its opposite give the same distance), so their mean is an unbiased sliced estimate,
    and evenly spread, so it has almost no variance from the directions (one random offset)."""
    offset = float(torch.rand(1, generator=generator, device=generator.device)) * math.pi / n
    angles = offset + torch.arange(n, dtype=torch.float64) * math.pi / n
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def sliced_w2(x: Tensor, y: Tensor, directions: Tensor) -> float:
    """Sliced Wasserstein-2 between two equal-sized point sets: along each direction the 1-D W2 is
    exact (the sorted projections paired in order); SW2 = sqrt(mean over directions of W2^2)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"sliced_w2 compares equal counts, got {x.shape[0]} and {y.shape[0]}")
    px, py = (torch.sort(s.double() @ directions.T, dim=0).values for s in (x, y))
    return float((px - py).pow(2).mean().sqrt())


class GMMFit(Metric):
    """How well samples reproduce the true 2-D mixture. Headline: sw2, the sliced Wasserstein-2
    distance to as many held-out points, in data units: it grows only linearly with how far samples
    stray, and penalises samples too spread and too tight alike. The NLL under the true mixture is a
    diagnostic: it is unbounded above (a diverged sampler scores 1e7) and rewards samples tighter than
    the data (collapsed onto the means it beats real data), which std_ratio < 1 shows.

    Lifted data (spec.lift = P): samples are scored through z = P^T x, and off_manifold is the energy
    ||(I - P P^T) x||^2 the samples put off the data's plane."""

    name = "gmm_fit"
    keys = {
        "sw2": KeySpec("lower", "headline", nonnegative=True, unit=PLANE,
                       description="sliced Wasserstein-2 distance in the data's plane to as many held-out points"),
        "nll": KeySpec("lower", "diagnostic", unit="nats",
                       description="mean negative log-likelihood under the true mixture (unbounded; rewards too-tight samples)"),
        "modes_covered": KeySpec("higher", "diagnostic", nonnegative=True, unit="share of modes",
                                 description="share of modes that get at least min_share of their true weight"),
        "max_weight_error": KeySpec("lower", "diagnostic", nonnegative=True, unit=SHARE,
                                    description="largest |sample share - true weight| over the modes"),
        "off_mode_fraction": KeySpec("lower", "diagnostic", nonnegative=True, unit=SHARE,
                                     description="share of samples outside the 0.999 ellipse of their nearest mode"),
        "off_manifold": KeySpec("lower", "diagnostic", nonnegative=True, unit="squared distance in data units",
                                description="mean ||(I - P P^T) x||^2: energy off the data's plane (lifted data only)"),
        "std_ratio": KeySpec("none", "diagnostic", unit="ratio (1 is right)",
                             description="spread within a mode / its true std (below 1: too tight)"),
    }

    class Params(Metric.Params):
        num_samples: int = Field(4000, ge=2, description="samples generated per sampler")
        min_share: float = Field(0.25, gt=0, description="a mode is covered when it gets this share of its true weight")
        directions: int = Field(256, ge=2, description="directions of the sliced Wasserstein distance sw2")

    def check(self, spec: DataSpec) -> None:
        if spec.mixture is None:
            raise AblateError(f"gmm_fit needs a dataset with a known mixture (e.g. gmm2d); {spec.name!r} has none")
        if spec.mixture.means.shape[1] != 2:
            raise AblateError(f"gmm_fit scores a 2-D mixture; {spec.name!r} has a {spec.mixture.means.shape[1]}-D one")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        mix = ctx.data.spec.mixture
        if mix is None or samples is None:
            raise AblateError(f"gmm_fit needs a dataset with a known mixture (gmm2d, gmm_lifted), not {ctx.data.spec.name!r}",
                              key="metric.name")
        x, ref = samples.double().cpu().flatten(1), real.double().cpu().flatten(1)
        lifted = {}
        if ctx.data.spec.lift is not None:
            lift = ctx.data.spec.lift
            (x, flat), ref = (x @ lift, x), ref @ lift
            lifted["off_manifold"] = float((flat - x @ lift.T).pow(2).sum(1).mean())
        n = min(x.shape[0], ref.shape[0])  # equal counts: the floor row pays the same finite-sample distance
        sw2 = sliced_w2(x[:n], ref[:n], plane_directions(self.params.directions, ctx.generator))
        x = x[:, None, :]
        z2 = ((x - mix.means[None]) / mix.stds[None]).pow(2).sum(-1)  # [N, K] squared Mahalanobis
        log_comp = -0.5 * z2 - mix.stds.log().sum(-1)[None] - math.log(2 * math.pi) + mix.weights.log()[None]
        k = log_comp.argmax(1)
        on_mode = z2.gather(1, k[:, None]).squeeze(1) < 13.8155  # chi2(2) 0.999 quantile
        share = torch.bincount(k, minlength=len(mix.weights)).double() / x.shape[0]
        stds = [x[k == j, 0].std(0).mean().item() / mix.stds[j].mean().item() for j in range(len(mix.weights)) if (k == j).sum() > 2]
        return {
            "sw2": sw2,
            "modes_covered": float((share >= self.params.min_share * mix.weights).double().mean()),
            "max_weight_error": float((share - mix.weights).abs().max()),
            "off_mode_fraction": float(1 - on_mode.double().mean()),
            "nll": float(-torch.logsumexp(log_comp, 1).mean()),
            **({"std_ratio": float(sum(stds) / len(stds))} if stds else {}),  # no mode with 3 samples: undefined, left out
            **lifted,
        }


@hookimpl
def ablate_metrics() -> list[type]:
    return [GMMFit]
