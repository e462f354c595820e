"""Noise schedules: the betas of the forward process."""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ablate import Schedule, hookimpl


class Linear(Schedule):
    """Betas evenly spaced from beta_start to beta_end (Ho et al. 2020: 1e-4 to 0.02 at T = 1000).

    By default both ends are multiplied by 1000/T (improved DDPM's get_named_beta_schedule), so every T
    reaches noise (abar_T ~ 4e-5) and T = 1000 is DDPM's schedule exactly; without the scaling, T = 200
    stops at abar_T = 0.13 while sampling still starts from N(0, I)."""

    name = "linear"

    class Params(Schedule.Params):
        beta_start: float = Field(1e-4, gt=0, lt=1, description="beta_1 at T = 1000 (multiplied by 1000/T when scale_with_T)")
        beta_end: float = Field(0.02, gt=0, lt=1, description="beta_T at T = 1000 (multiplied by 1000/T when scale_with_T)")
        scale_with_T: bool = Field(True, description="scale both ends by 1000/T (improved DDPM); false: use them as given")

        @model_validator(mode="after")
        def _below_one(self) -> Linear.Params:
            top = max(self.beta_start, self.beta_end) * 1000 / self.T
            if self.scale_with_T and top >= 1:
                raise ValueError(f"the scaled beta x 1000/T = {top:g} at T = {self.T} is not below 1: "
                                 "lower beta_end, raise T, or set scale_with_T = false with betas below 1")
            return self

    def betas(self, T: int) -> Tensor:
        scale = 1000 / T if self.params.scale_with_T else 1.0
        return torch.linspace(self.params.beta_start * scale, self.params.beta_end * scale, T, dtype=torch.float64)


class Cosine(Schedule):
    """abar_t = cos^2(((t/T + s) / (1 + s)) * pi/2) (Nichol & Dhariwal 2021), betas clipped at max_beta."""

    name = "cosine"

    class Params(Schedule.Params):
        s: float = Field(0.008, ge=0, description="offset that keeps beta_1 from being tiny")
        max_beta: float = Field(0.999, gt=0, lt=1, description="upper clip of each beta")

    def betas(self, T: int) -> Tensor:
        s = self.params.s
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=self.params.max_beta)


@hookimpl
def ablate_schedules() -> list[type]:
    return [Linear, Cosine]
