"""Samplers driven by the exact GMM posterior-mean denoiser: no training, so any error is the sampler's.

The true mixture (3 modes on a circle of radius 0.75, std 0.06, weights 0.5/0.3/0.2) is written out
here independently of the dataset plugin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle_mixture import MEANS, MIXTURE_MEAN, STD, WEIGHTS, Counting, T, oracle

from ablate import Prediction


@pytest.fixture(scope="module")
def gmm(registry):
    return oracle(registry)


def _run(registry, gmm, sampler_name, params, n, seed=0, t_start=T - 1):
    diffusion, _, denoiser = gmm
    sampler = registry.create("sampler", sampler_name, params)
    g = torch.Generator().manual_seed(seed)
    counting = Counting(denoiser)
    x = sampler.sample(counting, diffusion, x=torch.randn(n, 2, generator=g), t_start=t_start, generator=g)
    return sampler, x, counting.calls


def _mode_stats(x: torch.Tensor):
    x = x.double().numpy()
    k = ((x[:, None, :] - MEANS[None]) ** 2).sum(-1).argmin(1)
    share = np.bincount(k, minlength=3) / len(x)
    means = np.stack([x[k == j].mean(0) for j in range(3)])
    stds = np.stack([x[k == j].std(0, ddof=1) for j in range(3)])
    return share, means, stds


@pytest.fixture(scope="module")
def ancestral_posterior(registry, gmm):
    return _run(registry, gmm, "ancestral", {}, 8000, seed=0)


@pytest.fixture(scope="module")
def ancestral_beta(registry, gmm):
    return _run(registry, gmm, "ancestral", {"variance": "beta"}, 8000, seed=1)


def test_dataset_mixture_is_the_stated_one(gmm):
    mix = gmm[1].spec.mixture
    np.testing.assert_allclose(mix.weights.numpy(), WEIGHTS, atol=1e-12)
    np.testing.assert_allclose(mix.means.numpy(), MEANS, atol=1e-12)
    np.testing.assert_allclose(mix.stds.numpy(), STD, atol=1e-12)


def test_oracle_is_exact_posterior_mean_for_one_gaussian(registry):
    """One component N(mu, v): E[x0 | x_t] = mu + a v / (a^2 v + 1 - abar) (x_t - a mu) (Gaussian conditioning)."""
    diffusion = registry.create("schedule", "linear", {"T": T}).diffusion()
    data = registry.create("dataset", "gmm2d", {"n_modes": 1, "std": 0.3, "n_train": 10, "n_test": 10}).load()
    model = registry.create("model", "gmm_oracle")
    den = model.denoiser(model.build(data.spec), registry.create("target", "x0"), diffusion, data.spec)
    mu, v = np.array([0.75, 0.0]), 0.09
    t = np.array([0, 50, 300, 999])
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))[t][:, None]
    xt = np.random.default_rng(0).normal(size=(4, 2))
    a = np.sqrt(abar)
    expected = mu + a * v / (abar * v + 1 - abar) * (xt - a * mu)
    pred = den(torch.tensor(xt), torch.tensor(t))
    np.testing.assert_allclose(pred.x0.numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(pred.eps.numpy(), (xt - a * expected) / np.sqrt(1 - abar), rtol=1e-9)


def test_ancestral_posterior_variance_reproduces_mixture(ancestral_posterior):
    _, x, _ = ancestral_posterior
    share, means, stds = _mode_stats(x)
    np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
    np.testing.assert_allclose(means, MEANS, atol=0.02)
    # With sigma^2 = beta~_t the spread comes out ~0.92x the true std: even with the exact mean
    # E[x0|x_t], the true reverse kernel q(x_{t-1}|x_t) has variance beta~_t + c_t^2 Var[x0|x_t]
    # (c_t = posterior coefficient of x0). At small t, where the noise level is comparable to the
    # component std 0.06, Var[x0|x_t] is not negligible, so beta~_t (the lower bound) under-disperses.
    assert np.all((stds / STD > 0.85) & (stds / STD < 1.1)), stds / STD


def test_ancestral_beta_variance_reproduces_mixture(ancestral_beta):
    _, x, _ = ancestral_beta
    share, means, stds = _mode_stats(x)
    np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
    np.testing.assert_allclose(means, MEANS, atol=0.02)
    # beta_t >= beta~_t is the other bound of DDPM; here it nearly makes up the missing Var[x0|x_t] term.
    assert np.all((stds / STD > 0.93) & (stds / STD < 1.07)), stds / STD


def test_ancestral_nfe_and_calls(ancestral_posterior, ancestral_beta, gmm):
    diffusion = gmm[0]
    for sampler, _, calls in (ancestral_posterior, ancestral_beta):
        assert sampler.nfe(diffusion, T - 1) == 1000
        assert calls == list(range(T - 1, -1, -1))


def test_one_step_from_pure_noise_collapses_to_data_mean(registry, gmm):
    sampler, x, calls = _run(registry, gmm, "one_step", {"jump_at": 999}, 4000, seed=2)
    x = x.double().numpy()
    # x0_hat = E[x0 | x_T] and sqrt(abar_T) ~ 6e-3: x_T says almost nothing about x0
    assert x.std(0).max() < 0.01
    np.testing.assert_allclose(x.mean(0), MIXTURE_MEAN, atol=0.02)
    assert sampler.nfe(gmm[0], T - 1) == 1
    assert calls == [999]


@pytest.mark.parametrize("jump_at", [10, 20])
def test_one_step_from_small_t_recovers_modes(registry, gmm, jump_at):
    sampler, x, calls = _run(registry, gmm, "one_step", {"jump_at": jump_at}, 4000, seed=3 + jump_at)
    share, means, stds = _mode_stats(x)
    np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
    np.testing.assert_allclose(means, MEANS, atol=0.02)
    # a posterior mean E[x0|x_t] has less spread than x0 (law of total variance)
    assert np.all(stds < STD)
    assert sampler.nfe(gmm[0], T - 1) == 1000 - jump_at
    assert calls == list(range(T - 1, jump_at, -1)) + [jump_at]
    assert len(calls) == 1000 - jump_at


@pytest.mark.parametrize(
    "name, params, t_start, expected",
    [
        ("ancestral", {}, 499, 500),
        ("ancestral", {}, 0, 1),
        ("one_step", {"jump_at": 999}, 499, 1),
        ("one_step", {"jump_at": 100}, 499, 400),
        ("one_step", {"jump_at": 0}, 999, 1000),
    ],
)
def test_nfe_matches_counted_calls_from_any_t_start(registry, gmm, name, params, t_start, expected):
    sampler, x, calls = _run(registry, gmm, name, params, 4, t_start=t_start)
    assert sampler.nfe(gmm[0], t_start) == expected
    assert len(calls) == expected
    assert calls[0] == t_start
    assert x.shape == (4, 2) and bool(torch.isfinite(x).all())


def test_one_step_with_jump_at_zero_is_ancestral(registry, gmm):
    """At t = 0 the posterior mean is x0_hat itself, so jumping at 0 is plain ancestral sampling."""
    _, a, _ = _run(registry, gmm, "ancestral", {}, 64, seed=9)
    _, b, _ = _run(registry, gmm, "one_step", {"jump_at": 0}, 64, seed=9)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("t", [1, 500, 999])
def test_one_ancestral_step_is_ddpm_update(linear, t, variance):
    """x_{t-1} = 1/sqrt(alpha)(x_t - beta/sqrt(1-abar) eps_hat) + sigma z, with the same z."""
    from ablate_plugins.samplers import ancestral_steps

    d, ref = linear.diffusion, linear.ref
    rng = np.random.default_rng(t)
    eps_hat = rng.normal(size=(16, 2))
    xt = rng.normal(size=(16, 2))

    def denoiser(x, tt):  # a fixed eps prediction, decoded to x0 by hand
        a, s = math.sqrt(ref.abar[t]), math.sqrt(1 - ref.abar[t])
        e = torch.tensor(eps_hat)
        return Prediction(x0=(x - s * e) / a, eps=e)

    got = ancestral_steps(denoiser, d, torch.tensor(xt), t, t - 1, torch.Generator().manual_seed(5), variance)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64).numpy()
    var = (1 - ref.abar_prev[t]) / (1 - ref.abar[t]) * ref.betas[t] if variance == "posterior" else ref.betas[t]
    expected = (xt - ref.betas[t] / math.sqrt(1 - ref.abar[t]) * eps_hat) / math.sqrt(ref.alphas[t]) + math.sqrt(var) * z
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9)
