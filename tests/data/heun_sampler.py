"""A second-order sampler from a local file: Heun's method on the probability-flow ODE.

In y = x_t / sqrt(abar_t) and sigma_t = sqrt((1 - abar_t) / abar_t) the ODE is dy/dsigma = eps_hat
(Euler on it is DDIM with eta = 0). Each step evaluates the network twice (Euler, then the trapezoid
with the slope at the step's end), except the last, to sigma = 0, which takes x0_hat directly:
steps = n costs 2n - 1 evaluations, so heun(steps=6) and ddim(steps=11) cost the same. Evenly spaced
in t, its first steps span most of sigma's range: it converges at second order, but overtakes DDIM
only from a few dozen evaluations (on the exact oracle, T = 100: error 0.63 vs 0.13 at 11 NFE,
0.005 vs 0.012 at 81).
"""

import torch
from pydantic import Field

from ablate import Sampler, hookimpl


class Heun(Sampler):
    """Heun (2nd order) on the probability-flow ODE, `steps` steps evenly spaced in t."""

    name = "heun"

    class Params(Sampler.Params):
        steps: int = Field(11, ge=1, description="ODE steps; 2 network evaluations each, 1 for the last")

    def _timesteps(self, t_start):
        n = min(self.params.steps, t_start + 1)
        return [t_start if n == 1 else round(t_start * (n - 1 - i) / (n - 1)) for i in range(n)]

    def sample(self, denoiser, diffusion, x, t_start, generator):
        abar = diffusion.alpha_bars.tolist()
        sigma = [((1 - a) / a) ** 0.5 for a in abar]
        ts = self._timesteps(t_start)
        y = x / abar[ts[0]] ** 0.5

        def eps(y, t):
            return denoiser(y * abar[t] ** 0.5, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))

        for t, nxt in zip(ts[:-1], ts[1:], strict=True):
            slope = eps(y, t).eps
            euler = y + (sigma[nxt] - sigma[t]) * slope
            y = y + (sigma[nxt] - sigma[t]) * (slope + eps(euler, nxt).eps) / 2
        return eps(y, ts[-1]).x0

    def nfe(self, diffusion, t_start):
        return 2 * min(self.params.steps, t_start + 1) - 1


@hookimpl
def ablate_samplers():
    return [Heun]
