"""The forward process and its posterior, checked against closed forms computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ablate import Diffusion


def _t(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.long)


def test_betas_match_closed_form(schedule):
    np.testing.assert_allclose(schedule.diffusion.betas.numpy(), schedule.ref.betas, rtol=1e-12, atol=0)
    assert schedule.diffusion.T == 1000
    assert schedule.diffusion.betas.dtype == torch.float64


def test_linear_endpoints_are_ddpm_values(linear):
    assert linear.diffusion.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert linear.diffusion.betas[-1].item() == pytest.approx(0.02, rel=1e-12)


def test_alpha_bars_is_running_product_of_alphas(schedule):
    d, ref = schedule.diffusion, schedule.ref
    np.testing.assert_allclose(d.alphas.numpy(), ref.alphas, rtol=1e-13, atol=0)
    np.testing.assert_allclose(d.alpha_bars.numpy(), ref.abar, rtol=1e-12, atol=0)
    assert d.alpha_bars_prev[0].item() == 1.0
    np.testing.assert_allclose(d.alpha_bars_prev.numpy(), ref.abar_prev, rtol=1e-12, atol=0)


def test_cosine_alpha_bar_is_f_ratio(registry):
    """Nichol & Dhariwal: abar at paper step t (index t-1) is f(t)/f(0), wherever beta was not clipped."""

    def f(t: int) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    d = registry.create("schedule", "cosine", {"T": 1000}).diffusion()
    expected = np.array([f(i + 1) / f(0) for i in range(999)])
    np.testing.assert_allclose(d.alpha_bars[:999].numpy(), expected, rtol=1e-10)
    # the last beta is clipped at max_beta = 0.999
    assert d.betas[-1].item() == pytest.approx(0.999)


def test_snr(schedule):
    d, ref = schedule.diffusion, schedule.ref
    np.testing.assert_allclose(d.snr.numpy(), ref.abar / (1 - ref.abar), rtol=1e-10)


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_q_sample_moments(schedule, t):
    """x_t | x0 ~ N(sqrt(abar) x0, 1 - abar): sample mean and variance over 200k noise draws."""
    d, ref = schedule.diffusion, schedule.ref
    n = 200_000
    g = torch.Generator().manual_seed(1234 + t)
    x0_values = torch.tensor([-1.0, 0.3, 0.9], dtype=torch.float64)
    x0 = x0_values.expand(n, 3)
    eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
    xt = d.q_sample(x0, torch.full((n,), t, dtype=torch.long), eps).numpy()
    abar = ref.abar[t]
    var = 1 - abar
    mean_se = math.sqrt(var / n)
    var_se = var * math.sqrt(2 / (n - 1))
    np.testing.assert_allclose(xt.mean(0), math.sqrt(abar) * x0_values.numpy(), rtol=0, atol=5 * mean_se)
    np.testing.assert_allclose(xt.var(0, ddof=1), np.full(3, var), rtol=0, atol=5 * var_se)


def test_q_sample_keeps_dtype_and_broadcasts_per_sample_t(linear):
    d = linear.diffusion
    x0 = torch.ones(4, 1, 3, 3)
    eps = torch.zeros(4, 1, 3, 3)
    t = _t([0, 10, 500, 999])
    xt = d.q_sample(x0, t, eps)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    expected = np.sqrt(linear.ref.abar[[0, 10, 500, 999]])
    np.testing.assert_allclose(xt[:, 0, 0, 0].numpy(), expected, rtol=1e-6)


def _bayes_posterior(ref, x0: np.ndarray, xt: np.ndarray, t: np.ndarray):
    """q(x_{t-1} | x_t, x0) ∝ q(x_{t-1} | x0) q(x_t | x_{t-1}), by precision weighting (t >= 1)."""
    prior_mean = np.sqrt(ref.abar_prev[t])[:, None] * x0
    prior_var = (1 - ref.abar_prev[t])[:, None]
    # as a function of x_{t-1}: N(x_t; sqrt(alpha) x_{t-1}, beta) ∝ N(x_{t-1}; x_t / sqrt(alpha), beta / alpha)
    lik_mean = xt / np.sqrt(ref.alphas[t])[:, None]
    lik_var = (ref.betas[t] / ref.alphas[t])[:, None]
    precision = 1 / prior_var + 1 / lik_var
    var = 1 / precision
    mean = var * (prior_mean / prior_var + lik_mean / lik_var)
    return mean, var[:, 0]


def test_posterior_is_gaussian_bayes_posterior(schedule):
    d, ref = schedule.diffusion, schedule.ref
    rng = np.random.default_rng(0)
    t = np.arange(1, ref.T)
    x0 = rng.uniform(-1, 1, size=(len(t), 2))
    xt = rng.normal(size=(len(t), 2)) * 1.5  # arbitrary x_t, not tied to x0
    mean, var = _bayes_posterior(ref, x0, xt, t)
    got_mean = d.posterior_mean(torch.tensor(x0), torch.tensor(xt), _t(t)).numpy()
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(d.posterior_variance[1:].numpy(), var, rtol=1e-9, atol=0)


def test_posterior_at_t0_is_x0(schedule):
    """abar_prev[0] = 1: x_{-1} (the data) given x0 is x0 itself, with zero variance."""
    d = schedule.diffusion
    x0 = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    xt = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    assert d.posterior_variance[0].item() == 0.0
    np.testing.assert_allclose(d.posterior_mean(x0, xt, _t([0])).numpy(), x0.numpy(), rtol=0, atol=1e-12)


def test_posterior_matches_monte_carlo(linear):
    """Joint draws of (x_{t-1}, x_t) given x0, conditioned on x_t near a value: a model-free check."""
    d, ref = linear.diffusion, linear.ref
    t, x0, xt_target = 40, 0.5, 0.6
    n = 2_000_000
    g = torch.Generator().manual_seed(7)
    x_prev = math.sqrt(ref.abar_prev[t]) * x0 + math.sqrt(1 - ref.abar_prev[t]) * torch.randn(n, generator=g, dtype=torch.float64)
    xt = math.sqrt(ref.alphas[t]) * x_prev + math.sqrt(ref.betas[t]) * torch.randn(n, generator=g, dtype=torch.float64)
    near = (xt - xt_target).abs() < 0.002
    sel = x_prev[near]
    mean = d.posterior_mean(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt_target]], dtype=torch.float64), _t([t]))
    var = d.posterior_variance[t].item()
    assert sel.numel() > 2000
    se = math.sqrt(var / sel.numel())
    assert abs(sel.mean().item() - mean.item()) < 5 * se + 1e-4  # + bin-width bias
    assert sel.var().item() == pytest.approx(var, rel=0.1)


def test_x0_from_eps_and_eps_from_x0_invert_q_sample(schedule):
    d, ref = schedule.diffusion, schedule.ref
    g = torch.Generator().manual_seed(3)
    t = torch.cat([_t([0, 1, ref.T - 2, ref.T - 1]), torch.randint(0, ref.T, (60,), generator=g)])
    x0 = torch.rand(len(t), 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(len(t), 5, generator=g, dtype=torch.float64)
    # x_t by hand
    xt = torch.tensor(np.sqrt(ref.abar[t.numpy()]))[:, None] * x0 + torch.tensor(np.sqrt(1 - ref.abar[t.numpy()]))[:, None] * eps
    np.testing.assert_allclose(d.q_sample(x0, t, eps).numpy(), xt.numpy(), rtol=1e-12, atol=1e-13)
    # scale of the inversion error: 1/sqrt(abar) can be large at the end of the cosine schedule
    np.testing.assert_allclose(d.x0_from_eps(xt, t, eps).numpy(), x0.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(d.eps_from_x0(xt, t, x0).numpy(), eps.numpy(), rtol=0, atol=1e-9)


def test_epsilon_ancestral_mean_is_ddpm_formula(schedule):
    """posterior_mean(x0_from_eps(x_t, eps), x_t) = 1/sqrt(alpha) (x_t - beta / sqrt(1 - abar) eps)."""
    d, ref = schedule.diffusion, schedule.ref
    rng = np.random.default_rng(11)
    t = np.arange(ref.T)
    xt = rng.normal(size=(ref.T, 3))
    eps = rng.normal(size=(ref.T, 3))
    tt = _t(t)
    got = d.posterior_mean(d.x0_from_eps(torch.tensor(xt), tt, torch.tensor(eps)), torch.tensor(xt), tt).numpy()
    expected = (xt - (ref.betas / np.sqrt(1 - ref.abar))[:, None] * eps) / np.sqrt(ref.alphas)[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("bad", [[], [0.0, 0.1], [0.1, 1.0], [-0.1]])
def test_diffusion_rejects_bad_betas(bad):
    with pytest.raises(ValueError):
        Diffusion(torch.tensor(bad, dtype=torch.float64))


def test_tables_stay_right_across_many_mixed_calls():
    """Regression: a per-device cache keyed by id() of temporary tensors once returned the wrong table
    (sqrt(abar) where sqrt(1 - abar) was asked), which made eps and x0 errors identical."""
    import numpy as np

    from ablate import Diffusion

    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    d = Diffusion(torch.tensor(betas))
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        t = torch.randint(0, 1000, (16,), generator=gen)
        x0, eps = torch.randn(16, 3, generator=gen), torch.randn(16, 3, generator=gen)
        x_t = d.q_sample(x0, t, eps)  # float32: goes through the moved-table cache
        a = torch.tensor(np.sqrt(abar[t.numpy()]), dtype=torch.float32)[:, None]
        s = torch.tensor(np.sqrt(1 - abar[t.numpy()]), dtype=torch.float32)[:, None]
        torch.testing.assert_close(x_t, a * x0 + s * eps, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d.eps_from_x0(x_t, t, x0), eps, rtol=1e-3, atol=2e-3)
