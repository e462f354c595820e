"""An example third-party ablate plugin: strided ancestral sampling (Nichol & Dhariwal 2021, sec. 4).

DDPM's reverse step on `steps` evenly spaced timesteps instead of all T: from a kept timestep t to
the next kept s < t, draw x_s ~ q(x_s | x_t, x0_hat), the forward process's Gaussian posterior
between two arbitrary timesteps (with alpha_{t|s} = abar_t / abar_s in place of alpha_t).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ablate import Denoiser, Diffusion, Sampler, hookimpl


class StridedAncestral(Sampler):
    """Ancestral sampling on `steps` evenly spaced timesteps (DDPM's posterior, respaced)."""

    name = "example_strided"

    class Params(Sampler.Params):
        steps: int = Field(100, ge=1, description="network evaluations, at timesteps evenly spaced from t_start down to 0")

    def timesteps(self, t_start: int) -> list[int]:
        n = min(self.params.steps, t_start + 1)
        return [t_start if n == 1 else round(t_start * (n - 1 - i) / (n - 1)) for i in range(n)]

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        abar = diffusion.alpha_bars.tolist()
        ts = self.timesteps(t_start)
        for t, s in zip(ts, [*ts[1:], None], strict=True):
            x0 = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)).x0
            if s is None:  # the last evaluation returns its estimate of the clean data
                return x0
            beta = 1 - abar[t] / abar[s]  # beta of the respaced chain, s -> t
            mean = (abar[s] ** 0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - abar[s]) * x) / (1 - abar[t])
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
            x = mean + ((1 - abar[s]) / (1 - abar[t]) * beta) ** 0.5 * noise
        return x

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return len(self.timesteps(t_start))


@hookimpl
def ablate_samplers() -> list[type]:
    return [StridedAncestral]
