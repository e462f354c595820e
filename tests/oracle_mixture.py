"""The test mixture written out independently of the gmm2d plugin, and a call-recording denoiser,
shared by the sampler tests on the exact GMM oracle."""

from __future__ import annotations

import math

import numpy as np
import torch

T = 1000
WEIGHTS = np.array([0.5, 0.3, 0.2])
RADIUS, STD = 0.75, 0.06
ANGLES = 2 * math.pi * np.arange(3) / 3
MEANS = RADIUS * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
MIXTURE_MEAN = (WEIGHTS[:, None] * MEANS).sum(0)


class Counting:
    """Wraps a denoiser; records the timestep of every call (and checks the batch shares it)."""

    def __init__(self, denoiser) -> None:
        self.denoiser, self.calls = denoiser, []

    def __call__(self, x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        assert bool((t == t[0]).all())
        self.calls.append(int(t[0]))
        return self.denoiser(x_t, t)


def oracle(registry):
    """(diffusion, data, denoiser): the gmm_oracle on the 3-mode gmm2d, linear schedule, T = 1000."""
    diffusion = registry.create("schedule", "linear", {"T": T}).diffusion()
    data = registry.create("dataset", "gmm2d", {"n_modes": 3, "weights": list(WEIGHTS)}).load()
    model = registry.create("model", "gmm_oracle")
    return diffusion, data, model.denoiser(model.build(data.spec), registry.create("target", "epsilon"), diffusion, data.spec)
