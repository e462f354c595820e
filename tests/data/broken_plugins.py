"""Local plugins for the fault-isolation tests, broken while BROKEN is True: a test copies this file and
"fixes" the copy by editing that line, as a plugin author would.

raising (sampler) raises; nan_spread (metric) returns NaN; broken_diagnostic (a cheap model diagnostic,
so also a learning-curve evaluation) raises; raising_weights (weighting) raises in training; scripted
(metric) returns whatever its `returns` parameter names, broken or not.
"""

from __future__ import annotations

import errno
import math

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ablate import (
    AblateError,
    Denoiser,
    Diffusion,
    EvalContext,
    KeySpec,
    Metric,
    Sampler,
    Target,
    Weighting,
    hookimpl,
)

BROKEN = True


class Raising(Sampler):
    """x0_hat(x_T) in one evaluation; raises while BROKEN."""

    name = "raising"

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        if BROKEN:
            raise ValueError("boom from the sampler")
        t = torch.full((x.shape[0],), t_start, dtype=torch.long, device=x.device)
        return denoiser(x, t).x0

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return 1


class NanSpread(Metric):
    """The samples' standard deviation; NaN while BROKEN."""

    name = "nan_spread"
    keys = {"spread": KeySpec(description="standard deviation of the samples")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        return {"spread": math.nan if BROKEN else float(samples.std())}


class BrokenDiagnostic(Metric):
    """The denoiser's x0 error at t = T // 2 on held-out data; raises while BROKEN."""

    name = "broken_diagnostic"
    needs_samples = False
    cheap = True
    keys = {"x0_mse": KeySpec("lower", "headline", nonnegative=True, description="x0 error at T // 2")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        if BROKEN:
            raise RuntimeError("boom from the diagnostic\nsecond line of the message")
        x0 = real[: self.params.num_samples].to(ctx.device)
        t = torch.full((x0.shape[0],), ctx.diffusion.T // 2, dtype=torch.long, device=x0.device)
        eps = torch.randn(x0.shape, generator=ctx.generator, device=ctx.generator.device).to(x0.device)
        return {"x0_mse": float((ctx.denoiser(ctx.diffusion.q_sample(x0, t, eps), t).x0 - x0).pow(2).mean())}


class RaisingWeights(Weighting):
    """w(t) = 1; raises while BROKEN, so the cell fails before its first step."""

    name = "raising_weights"

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        if BROKEN:
            raise RuntimeError("boom from the weighting")
        return torch.ones(t.shape, dtype=torch.float64)


RETURNS = {  # what `scripted` returns, by name: two good results, then the ways a metric can go wrong
    "good": lambda: {"a": 1.5, "b": np.float32(2.5), "c": torch.tensor(3.5, dtype=torch.float64), "d": 4},
    "good_numpy": lambda: {"a": np.float64(0.25)},
    "none": lambda: None,
    "text": lambda: "0.5",
    "float": lambda: 0.5,
    "tensor": lambda: torch.ones(3),
    "nan": lambda: {"a": math.nan},
    "inf": lambda: {"a": 1.0, "b": -math.inf},
    "bool": lambda: {"a": True},
    "int_key": lambda: {1: 1.0},
    "str_value": lambda: {"a": "1.0"},
    "none_value": lambda: {"a": None},
    "list": lambda: [1.0, 2.0],
    "empty": lambda: {},
    "vector_value": lambda: {"a": torch.ones(2)},
}


def _raise(exc: BaseException) -> None:
    raise exc


STOPS = {  # what is not the plugin's own failure: these stop the run as before
    "bad_input": lambda: _raise(AblateError("the metric's reference file is missing", key="metric.reference")),
    "disk_full": lambda: _raise(OSError(errno.ENOSPC, "No space left on device", "cache/features.pt")),
    "interrupt": lambda: _raise(KeyboardInterrupt()),
}


class Scripted(Metric):
    """Returns RETURNS[returns] (or raises STOPS[returns]): a metric as broken as the test asks."""

    name = "scripted"

    class Params(Metric.Params):
        returns: str = Field(..., description="a key of RETURNS or STOPS")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        return {**RETURNS, **STOPS}[self.params.returns]()  # type: ignore[return-value]


@hookimpl
def ablate_samplers() -> list[type]:
    return [Raising]


@hookimpl
def ablate_metrics() -> list[type]:
    return [NanSpread, BrokenDiagnostic, Scripted]


@hookimpl
def ablate_weightings() -> list[type]:
    return [RaisingWeights]
