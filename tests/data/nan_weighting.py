"""A local weighting plugin for the tests: NaN weights, so the first recorded loss is NaN."""

from __future__ import annotations

from torch import Tensor

from ablate import Diffusion, Target, Weighting, hookimpl


class NanWeights(Weighting):
    """w(t) = NaN: training diverges at once (the runner must mark the cell failed and go on)."""

    name = "nan_weights"

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        return diffusion.betas.new_full(t.shape, float("nan")).to(t.device)


@hookimpl
def ablate_weightings() -> list[type]:
    return [NanWeights]
