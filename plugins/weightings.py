"""Loss weightings w(t) on the target-space MSE.

Each is defined by its weight on the epsilon-space MSE, w_eps(t), and converted to the
trained target with the target's x0_error_scale s(t): at fixed x_t the eps error is
sqrt(SNR) times the x0 error and the target error is s(t) times it, so
w_target(t) = w_eps(t) * SNR(t) / s(t)^2 gives every target the same loss.
`simple` is the exception: w = 1 in whatever space the target lives, which is what
makes "x0 + simple" a different objective from "epsilon + simple".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from ablate import Diffusion, Target, Weighting, hookimpl


def _to_target_space(w_eps: Tensor, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
    tc = t.cpu()
    return (w_eps * diffusion.snr[tc] / target.x0_error_scale(diffusion, t).pow(2)).to(t.device)


class Simple(Weighting):
    """w = 1 on the target's own MSE (DDPM's L_simple when the target is epsilon)."""

    name = "simple"

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        return diffusion.betas.new_ones(t.shape).to(t.device)


class EpsEquivalent(Weighting):
    """Makes any target's loss equal the epsilon MSE: the control that separates target from weighting."""

    name = "eps_equivalent"

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        return _to_target_space(diffusion.betas.new_ones(t.shape), diffusion, target, t)


class VLB(Weighting):
    """The variational bound's weight on the eps error (Ho et al. 2020, eq. 12), 1/(2 sigma^2) * beta^2 / ((1 - abar) alpha),
    converted per target."""

    name = "vlb"

    class Params(Weighting.Params):
        sigma: Literal["posterior", "beta"] = Field(
            "posterior",
            description="reverse variance sigma^2: the posterior variance (t=0 uses t=1's, as DDPM clips it) or beta",
        )

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        if self.params.sigma == "beta":
            var = diffusion.betas
        else:
            var = diffusion.posterior_variance.clone()
            var[0] = diffusion.posterior_variance[1]
        w_eps = diffusion.betas**2 / (2 * var * (1 - diffusion.alpha_bars) * diffusion.alphas)
        return _to_target_space(w_eps[t.cpu()], diffusion, target, t)


class MinSNR(Weighting):
    """Min-SNR-gamma (Hang et al. 2023): the x0 loss weighted by min(SNR, gamma)."""

    name = "min_snr"

    class Params(Weighting.Params):
        gamma: float = Field(5.0, gt=0, description="SNR clip")

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        snr = diffusion.snr[t.cpu()]
        return _to_target_space(snr.clamp(max=self.params.gamma) / snr, diffusion, target, t)


@hookimpl
def ablate_weightings() -> list[type]:
    return [Simple, EpsEquivalent, VLB, MinSNR]
