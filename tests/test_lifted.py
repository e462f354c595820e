"""gmm_lifted, the lifted gmm_oracle and gmm_fit against closed forms: an orthonormal lift, an exact round
trip, zero off-manifold energy for the data, the D-dim Gaussian-mixture posterior mean written out
independently (full D x D covariances, scipy), and the known entropy of well-separated modes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ablate import EvalContext
from ablate.plugins import load_registry

DIMS = [2, 8, 32, 128, 512]
N_MODES, RADIUS, STD = 8, 0.75, 0.06
ANGLES = 2 * math.pi * np.arange(N_MODES) / N_MODES
MEANS = RADIUS * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
# adjacent means are 9.6 std apart, so the mixture's entropy is that of the mode label plus one Gaussian's
ENTROPY = math.log(N_MODES) + 1 + math.log(2 * math.pi * STD**2)


@pytest.fixture(scope="module")
def registry():
    return load_registry([])


def lifted(registry, D: int, **params):
    return registry.create("dataset", "gmm_lifted", {"D": D, "n_train": 2000, "n_test": 500, **params}).load()


def fit(registry, data, samples) -> dict[str, float]:
    ctx = EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"), cache_dir=Path("."),
                      generator=torch.Generator())
    return registry.create("metric", "gmm_fit").evaluate(samples, data.test, ctx)


@pytest.mark.parametrize("D", DIMS)
def test_lift_is_orthonormal_and_round_trips_exactly(registry, D):
    data = lifted(registry, D)
    P = data.spec.lift
    assert P.shape == (D, 2) and P.dtype == torch.float64 and data.spec.shape == (D,)
    torch.testing.assert_close(P.T @ P, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-13)
    z = torch.randn(100, 2, dtype=torch.float64)
    torch.testing.assert_close((z @ P.T) @ P, z, rtol=0, atol=1e-13)
    flat = registry.create("dataset", "gmm2d", {"n_train": 2000, "n_test": 500}).load()
    torch.testing.assert_close(data.train.double() @ P, flat.train.double(), rtol=0, atol=1e-6)  # float32 storage
    assert torch.equal(data.train_labels, flat.train_labels)
    assert data.spec.mixture is not None and torch.allclose(data.spec.mixture.means, torch.tensor(MEANS))


def test_lift_is_fixed_by_its_seed(registry):
    a, b, c = lifted(registry, 32).spec.lift, lifted(registry, 32).spec.lift, lifted(registry, 32, lift_seed=1).spec.lift
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("D", DIMS)
def test_lifted_real_data_has_no_off_manifold_energy_and_the_mixture_nll(registry, D):
    data = lifted(registry, D)
    out = fit(registry, data, data.test)
    assert out["off_manifold"] < 1e-10
    z = (data.test.double() @ data.spec.lift).numpy()
    density = sum(multivariate_normal(m, STD**2 * np.eye(2)).pdf(z) for m in MEANS) / N_MODES
    assert out["nll"] == pytest.approx(-np.log(density).mean(), rel=1e-9)
    assert out["modes_covered"] == 1.0


def test_off_manifold_energy_is_the_squared_distance_to_the_plane(registry):
    data = lifted(registry, 8)
    P = data.spec.lift
    g = torch.randn(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = g - P @ (P.T @ g)
    u = u / u.norm()  # a unit vector orthogonal to the plane
    shifts = torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64)
    x = data.test[:4].double() + shifts[:, None] * u[None]
    assert fit(registry, data, x)["off_manifold"] == pytest.approx(float(shifts.pow(2).mean()), abs=1e-9)


def posterior_mean_full(x_t: np.ndarray, abar: float, P: np.ndarray) -> np.ndarray:
    """E[x0 | x_t] for the lifted mixture in D dims: component k gives x_t ~ N(a P mu_k, a^2 P V P^T + s^2 I)."""
    a, s2 = math.sqrt(abar), 1 - abar
    V = STD**2 * P @ P.T  # covariance of x0 within a component: V_k = P (STD^2 I) P^T
    cov = a * a * V + s2 * np.eye(P.shape[0])
    inv = np.linalg.inv(cov)  # the same for every component (equal stds), so its log-determinant cancels
    diffs = [x_t - a * P @ m for m in MEANS]
    log_lik = np.stack([-0.5 * np.einsum("bi,ij,bj->b", d, inv, d) for d in diffs], axis=1)
    resp = np.exp(log_lik - log_lik.max(1, keepdims=True))
    resp /= resp.sum(1, keepdims=True)
    gain = a * V @ inv
    cond = np.stack([P @ m + (x_t - a * P @ m) @ gain.T for m in MEANS], axis=1)  # [B, K, D]
    return (resp[..., None] * cond).sum(1)


@pytest.mark.parametrize("D", DIMS)
def test_lifted_oracle_is_the_full_dimensional_posterior_mean(registry, D):
    data = lifted(registry, D)
    diffusion = registry.create("schedule", "linear", {"T": 1000}).diffusion()
    model = registry.create("model", "gmm_oracle")
    denoiser = model.denoiser(model.build(data.spec), registry.create("target", "epsilon"), diffusion, data.spec)
    gen = torch.Generator().manual_seed(D)
    P = data.spec.lift.numpy()
    for t in (0, 300, 700, 999):
        abar = float(diffusion.alpha_bars[t])
        x0, eps = data.test[:16].double(), torch.randn(16, D, generator=gen, dtype=torch.float64)
        x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        pred = denoiser(x_t, torch.full((16,), t))
        np.testing.assert_allclose(pred.x0.numpy(), posterior_mean_full(x_t.numpy(), abar, P), atol=1e-9)
        torch.testing.assert_close(pred.eps, (x_t - math.sqrt(abar) * pred.x0) / math.sqrt(1 - abar))


def oracle_samples(registry, data, n: int = 1000, T: int = 200) -> torch.Tensor:
    diffusion = registry.create("schedule", "linear", {"T": T}).diffusion()
    model = registry.create("model", "gmm_oracle")
    denoiser = model.denoiser(model.build(data.spec), registry.create("target", "epsilon"), diffusion, data.spec)
    gen = torch.Generator().manual_seed(data.spec.shape[0])
    x = torch.randn(n, *data.spec.shape, generator=gen)
    return registry.create("sampler", "ancestral").sample(denoiser, diffusion, x, diffusion.T - 1, gen)


@pytest.fixture(scope="module")
def flat_oracle(registry):
    """gmm_fit of the unlifted oracle's samples, and the spread of their log-density."""
    data = registry.create("dataset", "gmm2d", {"n_train": 2000, "n_test": 500}).load()
    samples = oracle_samples(registry, data).double()
    log_p = torch.logsumexp(torch.stack([torch.distributions.MultivariateNormal(
        torch.tensor(m), STD**2 * torch.eye(2, dtype=torch.float64)).log_prob(samples) for m in MEANS]), 0)
    return fit(registry, data, samples), float(log_p.std())


@pytest.mark.parametrize("D", DIMS)
def test_lifted_oracle_samples_score_like_the_flat_oracle(registry, flat_oracle, D):
    """Ancestral sampling (T = 200) with the exact denoiser: at every D, nothing off the plane and the same
    scores as in 2-D (independent noise, so within 4 standard errors). Its NLL is below the data's entropy:
    finite-T ancestral sampling, whose last step returns E[x0 | x_1], narrows each mode (std_ratio < 1)."""
    flat, log_p_std = flat_oracle
    out = fit(registry, lifted(registry, D), oracle_samples(registry, lifted(registry, D)))
    assert out["off_manifold"] < 1e-9 and out["modes_covered"] == 1.0 and out["off_mode_fraction"] < 0.01
    assert abs(out["nll"] - flat["nll"]) < 4 * math.sqrt(2) * log_p_std / math.sqrt(1000)
    assert out["nll"] < ENTROPY and out["max_weight_error"] < 0.04
    assert abs(out["std_ratio"] - flat["std_ratio"]) < 0.05 and out["std_ratio"] < 1.0
