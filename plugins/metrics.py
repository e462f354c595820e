"""Metrics of any data: the spread of the samples against the data's, and the x0 error by timestep; and the
hook that registers them with the image metrics (FID, KID, memorisation: ablate_plugins.image_metrics) and
precision/recall/density/coverage and MiFID (ablate_plugins.fidelity). The point-data metrics are
ablate_plugins.point_metrics, registered on their own."""

from __future__ import annotations

import torch
from ablate_plugins.fidelity import PRDC, MiFID
from ablate_plugins.image_metrics import FID, KID, NearestNeighbour
from pydantic import Field
from torch import Tensor

from ablate import AblateError, EvalContext, KeySpec, Metric, hookimpl


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
