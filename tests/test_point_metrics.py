"""gmm_fit's headline sw2, the sliced Wasserstein-2 distance in the data's plane (issue 21), against
closed forms: zero for one set, |c|/sqrt(2) for a translation by c, |dmu|^2/2 + (s1 - s2)^2 for two
isotropic Gaussians, equivariant under scaling; finite and monotone where the NLL explodes, and
raised (where the NLL is lowered) by samples tighter than the data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ablate_plugins.point_metrics import GMMFit, plane_directions, sliced_w2

from ablate import AblateError, DataSpec, EvalContext, Mixture
from ablate.plugins import load_registry


def dirs(n: int = 64, seed: int = 0) -> torch.Tensor:
    return plane_directions(n, torch.Generator().manual_seed(seed))


def whitened(n: int, seed: int) -> torch.Tensor:
    """n 2-D points with sample mean exactly 0 and sample covariance (1/n) exactly I."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T


@pytest.fixture(scope="module")
def score():
    registry = load_registry([])

    def evaluate(samples, dataset: str = "gmm2d", reference: torch.Tensor | None = None, seed: int = 0, **params):
        data = registry.create("dataset", dataset, {"n_train": 4000, "n_test": 2000, **params}).load()
        ctx = EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"), cache_dir=Path("."),
                          generator=torch.Generator().manual_seed(seed))
        x = samples(data) if callable(samples) else samples
        return registry.create("metric", "gmm_fit").evaluate(x, data.test if reference is None else reference, ctx)

    return evaluate


def test_sw2_is_the_one_headline_lower_is_better_with_a_unit():
    headlines = [k for k, spec in GMMFit.keys.items() if spec.role == "headline"]
    assert headlines == ["sw2"] and GMMFit.keys["sw2"].direction == "lower" and GMMFit.keys["sw2"].nonnegative
    assert GMMFit.keys["sw2"].unit == "distance in data units (the 2-D plane)"
    assert GMMFit.keys["nll"].role == "diagnostic" and GMMFit.keys["nll"].direction == "lower"
    assert all(spec.unit for spec in GMMFit.keys.values())


@pytest.mark.parametrize("n", [2, 3, 64, 257])
def test_directions_are_unit_evenly_spread_and_seeded(n):
    d = dirs(n, seed=3)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-15)
    # evenly spread over the half circle: the mean of cos^2 over them is exactly 1/2 for any offset
    assert (d[:, 0] ** 2).mean().item() == pytest.approx(0.5, abs=1e-14)
    assert torch.equal(d, dirs(n, seed=3)) and not torch.equal(d, dirs(n, seed=4))


def test_zero_for_identical_sets():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert sliced_w2(x, x, dirs()) == 0.0
    assert sliced_w2(x, x[torch.randperm(500, generator=torch.Generator().manual_seed(2))], dirs()) == 0.0  # order-free


@pytest.mark.parametrize("c", [(0.3, 0.0), (-1.0, 2.0), (1e-3, -4e-3)])
def test_translation_by_c_is_norm_c_over_sqrt_2(c):
    """Along theta the shift is <theta, c>, so W2^2 = <theta, c>^2 and its mean over the plane is |c|^2/2."""
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor(c, dtype=torch.float64)
    assert sliced_w2(x, x + shift, dirs(n=7, seed=5)) == pytest.approx(shift.norm().item() / math.sqrt(2), rel=1e-12)


@pytest.mark.parametrize(("mu", "s1", "s2"), [((0.5, -0.2), 1.0, 1.0), ((0.0, 0.0), 0.5, 2.0), ((1.0, 1.0), 0.1, 0.3)])
def test_two_isotropic_gaussians_exactly(mu, s1, s2):
    """x = s1 Z, y = mu + s2 Z with Z whitened: both projections sort in Z's order, so along theta
    W2^2 = <theta, mu>^2 + (s1 - s2)^2 exactly, and SW2^2 = |mu|^2 / 2 + (s1 - s2)^2."""
    z, mu = whitened(1000, seed=0), torch.tensor(mu, dtype=torch.float64)
    expected = math.sqrt(mu.pow(2).sum().item() / 2 + (s1 - s2) ** 2)
    assert sliced_w2(s1 * z, mu + s2 * z, dirs()) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_two_independent_gaussian_draws_approach_the_population_value():
    """Independent draws: the same closed form up to the finite-sample distance (~ 1/sqrt(n))."""
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(40_000, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0.6, -0.8]) + 1.5 * torch.randn(40_000, 2, generator=g, dtype=torch.float64)
    assert sliced_w2(x, y, dirs(256)) == pytest.approx(math.sqrt(1.0 / 2 + 1.0), rel=0.01)


@pytest.mark.parametrize("a", [0.01, 3.0, -2.0])
def test_scale_equivariance(a):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 2, generator=g, dtype=torch.float64), torch.rand(300, 2, generator=g, dtype=torch.float64)
    assert sliced_w2(a * x, a * y, dirs()) == pytest.approx(abs(a) * sliced_w2(x, y, dirs()), rel=1e-12)


def test_finite_and_monotone_where_the_nll_explodes(score):
    """Real points scaled by a growing factor (what a diverged eps sampler returns): sw2 grows about
    linearly with the factor, the NLL quadratically (to ~1e8 at 1000x)."""
    out = [score(lambda data, s=s: data.train[:2000] * s) for s in (1, 2, 4, 16, 100, 1000)]
    sw2, nll = [o["sw2"] for o in out], [o["nll"] for o in out]
    assert all(math.isfinite(v) for v in sw2) and sw2 == sorted(sw2) and len(set(sw2)) == len(sw2)
    assert sw2[-1] < 1000 < 1e6 < nll[-1]
    assert sw2[-1] / sw2[-2] == pytest.approx(10, rel=0.02)  # linear in the scale once far off


@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_too_tight_samples_lower_the_nll_but_raise_sw2(score, factor):
    """Real points pulled toward their mode's mean by `factor` (0: collapsed onto the means): the NLL
    calls them better than real data, sw2 worse."""

    def tight(factor):
        def draw(data):
            means = data.spec.mixture.means[data.train_labels[:2000]]
            return (means + factor * (data.train[:2000].double() - means)).float()
        return draw

    real, tight_ = score(tight(1.0)), score(tight(factor))
    assert tight_["nll"] < real["nll"] - 0.3 and tight_["sw2"] > real["sw2"] + 0.01
    assert tight_.get("std_ratio", 0.0) < 0.6 < real["std_ratio"]


def test_compares_with_as_many_reference_points_as_samples(score):
    """The reference is cut to the sample count (the real-data floor pays the same finite-sample
    distance): points past it do not count, and a set scored against itself is at 0."""
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert score(x, reference=x)["sw2"] == 0.0
    assert score(x, reference=torch.cat([x, x + 100.0]))["sw2"] == 0.0


def test_lifted_samples_are_scored_in_the_plane(score):
    flat = score(lambda data: data.train[:1000] + 0.05, seed=7)
    lifted = score(lambda data: data.train[:1000] + 0.05 * data.spec.lift.sum(1).float(), dataset="gmm_lifted", D=32, seed=7)
    assert lifted["sw2"] == pytest.approx(flat["sw2"], rel=1e-5)


def test_a_mixture_that_is_not_2d_is_refused_before_anything_trains():
    """sw2's directions, the NLL's constant and the 0.999 ellipse are those of a 2-D mixture."""
    mix = Mixture(weights=torch.ones(2) / 2, means=torch.zeros(2, 3, dtype=torch.float64), stds=torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(AblateError, match="gmm_fit scores a 2-D mixture; 'cube' has a 3-D one"):
        GMMFit().check(DataSpec(name="cube", shape=(3,), mixture=mix))
