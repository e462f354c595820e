"""Samplers: one short function per algorithm, the same signature for all (k-diffusion style).

Each starts from x = x_{t_start} and calls the denoiser for Prediction(x0, eps); none
knows which target the network was trained on, and none clips: x0_hat clipping (DDPM's
`clip_denoised`) is applied by the core at the denoiser seam (`eval.clip_x0`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ablate import AblateError, Denoiser, Diffusion, Sampler, hookimpl

Variance = Literal["posterior", "beta"]


def _timestep(x: Tensor, t: int) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _noise(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def ancestral_steps(
    denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, t_stop: int,
    generator: torch.Generator, variance: Variance = "posterior",
) -> Tensor:
    """Draw x_{t-1} ~ N(posterior_mean(x0_hat, x_t), sigma_t^2) for t = t_start .. t_stop + 1.

    Returns x_{t_stop}; with t_stop = -1 the last step (t = 0) returns its mean, x0_hat.
    """
    var = diffusion.posterior_variance if variance == "posterior" else diffusion.betas
    for t in range(t_start, t_stop, -1):
        x0 = denoiser(x, _timestep(x, t)).x0
        mean = float(diffusion.posterior_mean_coef_x0[t]) * x0 + float(diffusion.posterior_mean_coef_xt[t]) * x
        x = mean + float(var[t]) ** 0.5 * _noise(x, generator) if t > 0 else mean
    return x


class Ancestral(Sampler):
    """DDPM ancestral sampling: T steps of the reverse Gaussian (Ho et al. 2020, Algorithm 2)."""

    name = "ancestral"

    class Params(Sampler.Params):
        variance: Variance = Field("posterior", description="sigma_t^2: posterior variance beta~_t, or beta_t")

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        return ancestral_steps(denoiser, diffusion, x, t_start, -1, generator, self.params.variance)

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return t_start + 1


class OneStep(Sampler):
    """Ancestral steps down to t = jump_at, then jump x_t -> x0_hat in one evaluation.

    jump_at = T-1 from pure noise is one network evaluation; jump_at = 0 is plain ancestral.
    """

    name = "one_step"

    class Params(Sampler.Params):
        jump_at: int = Field(999, ge=0, description="timestep index at which to jump straight to x0_hat")
        variance: Variance = Field("posterior", description="sigma_t^2 of the ancestral steps before the jump")

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        jump = min(self.params.jump_at, t_start)
        x = ancestral_steps(denoiser, diffusion, x, t_start, jump, generator, self.params.variance)
        return denoiser(x, _timestep(x, jump)).x0

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return t_start - min(self.params.jump_at, t_start) + 1

    def check(self, diffusion: Diffusion) -> None:
        if self.params.jump_at >= diffusion.T:
            raise AblateError(f"must be below schedule.T = {diffusion.T} (got {self.params.jump_at})", key="jump_at")


def ddim_timesteps(t_start: int, steps: int, stop: int = 0) -> list[int]:
    """min(steps, t_start - stop + 1) distinct timesteps evenly spaced from t_start down to `stop`, then -1
    (the clean data: the step from `stop` returns x0_hat, a jump when stop > 0)."""
    n = min(steps, t_start - stop + 1)
    return [t_start if n == 1 else round(stop + (t_start - stop) * (n - 1 - i) / (n - 1)) for i in range(n)] + [-1]


def ddim_steps(
    denoiser: Denoiser, diffusion: Diffusion, x: Tensor, timesteps: list[int], generator: torch.Generator, eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) from x_{timesteps[0]} through each following timestep; returns the last x.

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev). Timestep -1 has abar = 1,
    so the step to it returns x0_hat. eta = 1 between consecutive timesteps is DDPM's posterior step.
    """
    abar = [*diffusion.alpha_bars.tolist(), 1.0]  # abar[-1] = 1: "timestep -1" is the clean data
    for t, prev in zip(timesteps[:-1], timesteps[1:], strict=True):
        pred = denoiser(x, _timestep(x, t))
        if prev < 0:
            return pred.x0
        sigma = eta * ((1 - abar[prev]) / (1 - abar[t]) * (1 - abar[t] / abar[prev])) ** 0.5
        x = abar[prev] ** 0.5 * pred.x0 + max(1 - abar[prev] - sigma**2, 0.0) ** 0.5 * pred.eps
        if sigma > 0:
            x = x + sigma * _noise(x, generator)
    return x


class DDIM(Sampler):
    """DDIM (Song et al. 2021): `steps` evaluations on evenly spaced timesteps; eta = 0 is deterministic.

    jump_at = j > 0 spaces the steps from x_T down to t = j and returns x0_hat(x_j) from there: at the same
    cost as full DDIM, the jump replaces the steps below j (the equal-cost form of one_step)."""

    name = "ddim"

    class Params(Sampler.Params):
        steps: int = Field(50, ge=1, description="network evaluations, at timesteps evenly spaced from t_start down to 0")
        eta: float = Field(0.0, ge=0, le=1, description="noise: 0 deterministic DDIM, 1 DDPM's posterior variance (ancestral when steps = T)")
        jump_at: int = Field(0, ge=0, description="last timestep of the grid, from which x0_hat is returned in one jump (0: full DDIM)")

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        timesteps = ddim_timesteps(t_start, self.params.steps, min(self.params.jump_at, t_start))
        return ddim_steps(denoiser, diffusion, x, timesteps, generator, self.params.eta)

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return min(self.params.steps, t_start - min(self.params.jump_at, t_start) + 1)

    def check(self, diffusion: Diffusion) -> None:
        if self.params.jump_at >= diffusion.T:
            raise AblateError(f"must be below schedule.T = {diffusion.T} (got {self.params.jump_at})", key="jump_at")


@hookimpl
def ablate_samplers() -> list[type]:
    return [Ancestral, OneStep, DDIM]
