"""Noise schedules: the betas of the forward process."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from ablate import Schedule, hookimpl


class Linear(Schedule):
    """Betas evenly spaced from beta_1 to beta_T (DDPM; the notes)."""

    name = "linear"

    class Params(Schedule.Params):
        beta_start: float = Field(1e-4, gt=0, lt=1, description="beta_1")
        beta_end: float = Field(0.02, gt=0, lt=1, description="beta_T")

    def betas(self, T: int) -> Tensor:
        return torch.linspace(self.params.beta_start, self.params.beta_end, T, dtype=torch.float64)


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
