"""A local weighting plugin for the tests: infinite weights, so the first recorded loss is inf."""

from __future__ import annotations

from torch import Tensor

from ablate import Diffusion, Target, Weighting, hookimpl


class Explode(Weighting):
    """w(t) = inf: training diverges at once (the runner must mark the cell failed and go on)."""

    name = "explode"

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        return diffusion.betas.new_full(t.shape, float("inf")).to(t.device)


@hookimpl
def ablate_weightings() -> list[type]:
    return [Explode]
