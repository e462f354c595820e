"""prdc (precision, recall, density, coverage) on constructed cases with known answers: samples from
half of a mixture's modes, samples equal to the reference, samples far away."""

from __future__ import annotations

import math

import pytest
import torch

import ablate
from ablate.datatypes import REFERENCE, Data, DataSpec, EvalContext

MODES, DIM, PER_MODE = 8, 2, 250


def mixture(modes: list[int], seed: int) -> torch.Tensor:
    """PER_MODE points around each listed mode: unit-sd 2-D blobs on a ring of radius 40 (about 30 apart, so no
    k-NN ball reaches another mode; in 2-D the balls of 250 points cover their blob, so a fresh draw is inside)."""
    gen = torch.Generator().manual_seed(seed)
    angles = torch.arange(MODES) * 2 * math.pi / MODES
    centres = 40.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return torch.cat([centres[m] + torch.randn(PER_MODE, DIM, generator=gen) for m in modes])


def prdc(samples: torch.Tensor, reference: torch.Tensor, **params) -> dict[str, float]:
    spec = DataSpec("blobs", (DIM,))
    data = Data(train=reference, test=reference, spec=spec)
    ctx = EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"), cache_dir=None,
                      generator=torch.Generator(), extra={REFERENCE: reference})
    metric = ablate.load_registry().create("metric", "prdc", {"features": "raw", **params})
    return metric.evaluate(samples, reference, ctx)


@pytest.mark.parametrize("standardise", [False, True])
def test_samples_from_half_of_the_modes(standardise):
    reference = mixture(list(range(MODES)), seed=0)
    out = prdc(mixture(list(range(MODES // 2)), seed=1), reference, standardise=standardise)
    assert out["precision"] > 0.95  # every sample looks real
    assert out["recall"] == pytest.approx(0.5, abs=0.03)  # half of the data is missed
    assert out["coverage"] == pytest.approx(0.5, abs=0.03)
    assert out["density"] == pytest.approx(1.0, abs=0.1)  # a fresh draw from the same modes: as dense as the data


def test_samples_equal_to_the_reference_score_one():
    """Each reference ball (radius: the k-th neighbour, strict <) holds the point itself and k - 1 others, so
    density = (1/k) * N k / N = 1 exactly; every point is in its own ball: precision = recall = coverage = 1."""
    reference = mixture(list(range(MODES)), seed=0)
    out = prdc(reference.clone(), reference)
    assert out == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.0, abs=1e-12), "coverage": 1.0}


def test_samples_far_away_score_zero():
    reference = mixture(list(range(MODES)), seed=0)
    out = prdc(reference + 1000.0, reference, standardise=False)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_nearest_k_must_leave_neighbours():
    reference = mixture([0], seed=0)[:5]
    with pytest.raises(ablate.AblateError, match="nearest_k = 5"):
        prdc(reference, reference)


def test_prdc_rates_copies_as_faithful_but_not_diverse():
    """Ten points, each repeated: precision 1 (each is a real point), coverage at most 10 reference balls."""
    reference = mixture(list(range(MODES)), seed=0)
    out = prdc(reference[:10].repeat(20, 1), reference, standardise=False)
    assert out["precision"] == 1.0
    assert out["coverage"] <= 10 * 6 / reference.shape[0] and math.isfinite(out["density"])
