"""A local sampler plugin for the tests: SIGKILLs its own process the first time it samples.

That makes "killed in the middle of evaluation" deterministic: the samplers before it are
evaluated and stored, it and the ones after it are not. Once the marker file exists it is a
plain one-step x0 jump from t_start.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor

from ablate import Denoiser, Diffusion, Sampler, hookimpl


class KillOnce(Sampler):
    """x0_hat(x_T) in one evaluation; the first call (no marker file yet) kills the process instead."""

    name = "kill_once"

    class Params(Sampler.Params):
        marker: str = Field(..., description="file created just before the kill; while it exists, no kill")

    def sample(self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator) -> Tensor:
        marker = Path(self.params.marker)
        if not marker.exists():
            marker.write_text("killed\n")
            os.kill(os.getpid(), signal.SIGKILL)
        t = torch.full((x.shape[0],), t_start, dtype=torch.long, device=x.device)
        return denoiser(x, t).x0

    def nfe(self, diffusion: Diffusion, t_start: int) -> int:
        return 1


@hookimpl
def ablate_samplers() -> list[type]:
    return [KillOnce]
