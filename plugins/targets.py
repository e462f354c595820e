"""Prediction targets: the network predicts eps, x0 or v; each converts back to Prediction(x0, eps)."""

from __future__ import annotations

from torch import Tensor

from ablate import Diffusion, Prediction, Target, hookimpl


class Epsilon(Target):
    """Predict the noise (DDPM). Its error is sqrt(SNR) times the implied x0 error."""

    name = "epsilon"

    def training_target(self, diffusion: Diffusion, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return eps

    def to_prediction(self, diffusion: Diffusion, x_t: Tensor, t: Tensor, output: Tensor) -> Prediction:
        return Prediction(x0=diffusion.x0_from_eps(x_t, t, output), eps=output)

    def x0_error_scale(self, diffusion: Diffusion, t: Tensor) -> Tensor:
        return diffusion.snr[t.cpu()].sqrt()


class X0(Target):
    """Predict the clean data directly: the parameterisation Ho et al. 2020 (section 3.2) found worse than eps."""

    name = "x0"

    def training_target(self, diffusion: Diffusion, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x0

    def to_prediction(self, diffusion: Diffusion, x_t: Tensor, t: Tensor, output: Tensor) -> Prediction:
        return Prediction(x0=output, eps=diffusion.eps_from_x0(x_t, t, output))

    def x0_error_scale(self, diffusion: Diffusion, t: Tensor) -> Tensor:
        return diffusion.snr.new_ones(t.shape)


class V(Target):
    """Predict v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""

    name = "v"

    def training_target(self, diffusion: Diffusion, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        a, s = diffusion.at(diffusion.sqrt_alpha_bars, t, x0), diffusion.at(diffusion.sqrt_one_minus_alpha_bars, t, x0)
        return a * eps - s * x0

    def to_prediction(self, diffusion: Diffusion, x_t: Tensor, t: Tensor, output: Tensor) -> Prediction:
        a, s = diffusion.at(diffusion.sqrt_alpha_bars, t, x_t), diffusion.at(diffusion.sqrt_one_minus_alpha_bars, t, x_t)
        return Prediction(x0=a * x_t - s * output, eps=s * x_t + a * output)

    def x0_error_scale(self, diffusion: Diffusion, t: Tensor) -> Tensor:
        return (1 + diffusion.snr[t.cpu()]).sqrt()


@hookimpl
def ablate_targets() -> list[type]:
    return [Epsilon, X0, V]
