"""The built-in `ddim` sampler (Song et al. 2021) on the exact GMM posterior-mean denoiser.

As in test_samplers_oracle.py the true mixture (3 modes on a circle of radius 0.75, std 0.06,
weights 0.5/0.3/0.2) is written out here, independently of the dataset plugin, and the closed forms
come from conftest's reference tables (plain numpy), never from `ablate`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle_mixture import MEANS, STD, WEIGHTS, Counting, T, oracle

from ablate import Prediction

N = 8000


@pytest.fixture(scope="module")
def gmm(registry):
    diffusion, _, denoiser = oracle(registry)
    return diffusion, denoiser


def _run(registry, gmm, name, params, n, seed=0, t_start=T - 1, dtype=torch.float32):
    diffusion, denoiser = gmm
    sampler = registry.create("sampler", name, params)
    g = torch.Generator().manual_seed(seed)
    counting = Counting(denoiser)
    x = sampler.sample(counting, diffusion, torch.randn(n, 2, generator=g, dtype=dtype), t_start, g)
    return sampler, x, counting.calls


def _mode_stats(x: torch.Tensor):
    """Nearest-mode assignment: share, mean and std (per axis) of each mode, and the counts."""
    x = x.double().numpy()
    k = ((x[:, None, :] - MEANS[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(k, minlength=3)
    means = np.stack([x[k == j].mean(0) for j in range(3)])
    stds = np.stack([x[k == j].std(0, ddof=1) for j in range(3)])
    return counts / len(x), means, stds, counts


@pytest.fixture(scope="module")
def ddim_50(registry, gmm):
    return _run(registry, gmm, "ddim", {"steps": 50}, N, seed=0)


@pytest.fixture(scope="module")
def ddim_eta1_all_steps(registry, gmm):
    return _run(registry, gmm, "ddim", {"steps": T, "eta": 1.0}, N, seed=1)


@pytest.fixture(scope="module")
def ancestral(registry, gmm):
    return _run(registry, gmm, "ancestral", {"variance": "posterior"}, N, seed=2)


def test_ddim_params_defaults_and_validation(registry):
    sampler = registry.create("sampler", "ddim")
    assert (sampler.params.steps, sampler.params.eta) == (50, 0.0)
    for bad in ({"steps": 0}, {"eta": -0.1}, {"eta": 1.5}, {"stpes": 10}):
        with pytest.raises(ValueError):
            registry.create("sampler", "ddim", bad)


def test_ddim_eta0_few_steps_recovers_mixture(ddim_50, gmm):
    sampler, x, calls = ddim_50
    share, means, stds, _ = _mode_stats(x)
    # measured (seed 0): shares 0.492 / 0.309 / 0.198, mean error <= 0.006
    np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
    np.testing.assert_allclose(means, MEANS, atol=0.02)
    # Each mode comes out narrower (measured 0.73-0.82 x the true std). That is DDIM's discretisation
    # error, not a bug: for one Gaussian component N(mu, v) a deterministic DDIM step t -> s maps
    # x_t - a_t mu to (a_s a_t v + s_s s_t) / (a_t^2 v + s_t^2) (x_t - a_t mu), while the exact
    # probability-flow map scales by sqrt(a_s^2 v + s_s^2) / sqrt(a_t^2 v + s_t^2); the ratio is <= 1
    # (Cauchy-Schwarz) and far from 1 only where the noise std s_t is comparable to the component std.
    # With 50 evenly spaced steps the last jump is t = 20 -> 0 (s_20 = 0.08 vs std 0.06): alone it gives 0.73.
    assert np.all((stds / STD > 0.6) & (stds / STD < 0.95)), stds / STD
    assert sampler.nfe(gmm[0], T - 1) == 50 == len(calls)
    assert bool(torch.isfinite(x).all())


def test_ddim_eta0_contraction_vanishes_with_all_steps(linear):
    """The per-step ratio above, multiplied over a schedule, goes to 1 as the steps shrink (closed form only)."""
    from ablate_plugins.samplers import ddim_timesteps

    abar, v = [*linear.ref.abar.tolist(), 1.0], STD**2

    def spread_ratio(steps):
        r = 1.0
        ts = ddim_timesteps(T - 1, steps)
        for t, s in zip(ts[:-1], ts[1:], strict=True):
            at, st, as_, ss = math.sqrt(abar[t]), math.sqrt(1 - abar[t]), math.sqrt(abar[s]), math.sqrt(1 - abar[s])
            r *= (as_ * at * v + ss * st) / math.sqrt((as_**2 * v + ss**2) * (at**2 * v + st**2))
        return r

    ratios = [spread_ratio(n) for n in (50, 100, 1000)]
    assert ratios[0] < ratios[1] < ratios[2] and ratios[2] > 0.96


def test_ddim_eta1_all_steps_matches_ancestral_statistically(ddim_eta1_all_steps, ancestral):
    """With eta = 1 and all T steps, sigma_t^2 = beta~_t and the mean is the posterior mean: the same
    Markov chain as ancestral(variance="posterior"). Two independent runs of one chain differ only by
    sampling noise, so every tolerance below is 4 standard errors of the difference of the two estimates
    (a 4-sigma miss has probability 6e-5 per comparison; there are 15)."""
    _, xd, calls = ddim_eta1_all_steps
    _, xa, _ = ancestral
    share_d, mean_d, std_d, n_d = _mode_stats(xd)
    share_a, mean_a, std_a, n_a = _mode_stats(xa)
    # mode shares: binomial proportions, SE of a difference = sqrt(2 p (1 - p) / N)
    se_share = np.sqrt(2 * WEIGHTS * (1 - WEIGHTS) / N)
    assert np.all(np.abs(share_d - share_a) < 4 * se_share), (share_d, share_a, se_share)
    # per-mode means: SE = sqrt(s_d^2 / n_d + s_a^2 / n_a)
    se_mean = np.sqrt(std_d**2 / n_d[:, None] + std_a**2 / n_a[:, None])
    assert np.all(np.abs(mean_d - mean_a) < 4 * se_mean), (mean_d - mean_a, se_mean)
    # per-mode stds (near-Gaussian modes): SE of a sample std = s / sqrt(2 (n - 1))
    se_std = np.sqrt(std_d**2 / (2 * (n_d[:, None] - 1)) + std_a**2 / (2 * (n_a[:, None] - 1)))
    assert np.all(np.abs(std_d - std_a) < 4 * se_std), (std_d - std_a, se_std)
    # and both reproduce the mixture (both ~0.93-0.95 x the true std: see test_samplers_oracle.py)
    for share, means, stds in ((share_d, mean_d, std_d), (share_a, mean_a, std_a)):
        np.testing.assert_allclose(share, WEIGHTS, atol=0.03)
        np.testing.assert_allclose(means, MEANS, atol=0.02)
        assert np.all((stds / STD > 0.85) & (stds / STD < 1.1)), stds / STD
    assert calls == list(range(T - 1, -1, -1))


def test_ddim_eta1_all_steps_is_ancestral_path_by_path(registry, gmm):
    """Same chain and the same noise draws in the same order: in float64 the two samplers agree to rounding."""
    _, a, _ = _run(registry, gmm, "ancestral", {}, 256, seed=5, dtype=torch.float64)
    _, d, _ = _run(registry, gmm, "ddim", {"steps": T, "eta": 1.0}, 256, seed=5, dtype=torch.float64)
    torch.testing.assert_close(d, a, rtol=1e-9, atol=1e-9)


def _fixed_eps_denoiser(ref, t_of_eps, eps_hat):
    """A denoiser predicting a fixed eps, decoded to x0 by hand from the reference tables."""

    def denoiser(x, tt):
        t = int(tt[0])
        a, s = math.sqrt(ref.abar[t]), math.sqrt(1 - ref.abar[t])
        e = torch.tensor(eps_hat)
        t_of_eps.append(t)
        return Prediction(x0=(x - s * e) / a, eps=e)

    return denoiser


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t, s", [(999, 979), (500, 499), (20, 0), (999, 0), (1, 0)])
def test_one_ddim_step_is_song_eq12(linear, t, s, eta):
    """x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z with the same z."""
    from ablate_plugins.samplers import ddim_steps

    ref = linear.ref
    rng = np.random.default_rng(t + s)
    eps_hat, xt = rng.normal(size=(16, 2)), rng.normal(size=(16, 2))
    seen: list[int] = []
    got = ddim_steps(_fixed_eps_denoiser(ref, seen, eps_hat), linear.diffusion, torch.tensor(xt), [t, s],
                     torch.Generator().manual_seed(7), eta)
    assert seen == [t]
    x0_hat = (xt - math.sqrt(1 - ref.abar[t]) * eps_hat) / math.sqrt(ref.abar[t])
    sigma = eta * math.sqrt((1 - ref.abar[s]) / (1 - ref.abar[t]) * (1 - ref.abar[t] / ref.abar[s]))
    mean = math.sqrt(ref.abar[s]) * x0_hat + math.sqrt(1 - ref.abar[s] - sigma**2) * eps_hat
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    np.testing.assert_allclose(got.numpy(), mean + sigma * z if eta > 0 else mean, rtol=1e-9, atol=1e-9)
    if s == t - 1 and eta == 1.0:
        # one step with eta = 1 between neighbours is DDPM's posterior step: variance beta~_t and the
        # DDPM's mean (Ho et al. 2020, eq. 11) 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat)
        assert sigma**2 == pytest.approx((1 - ref.abar_prev[t]) / (1 - ref.abar[t]) * ref.betas[t], rel=1e-9)
        ddpm_mean = (xt - ref.betas[t] / math.sqrt(1 - ref.abar[t]) * eps_hat) / math.sqrt(ref.alphas[t])
        np.testing.assert_allclose(mean, ddpm_mean, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t", [1, 500, 999])
def test_one_ddim_eta1_step_equals_one_ancestral_step(linear, t):
    from ablate_plugins.samplers import ancestral_steps, ddim_steps

    rng = np.random.default_rng(t)
    eps_hat, xt = rng.normal(size=(16, 2)), rng.normal(size=(16, 2))
    den = _fixed_eps_denoiser(linear.ref, [], eps_hat)
    a = ancestral_steps(den, linear.diffusion, torch.tensor(xt), t, t - 1, torch.Generator().manual_seed(3))
    d = ddim_steps(den, linear.diffusion, torch.tensor(xt), [t, t - 1], torch.Generator().manual_seed(3), 1.0)
    torch.testing.assert_close(d, a, rtol=1e-9, atol=1e-12)


def test_final_step_returns_x0_hat(linear):
    from ablate_plugins.samplers import ddim_steps

    eps_hat, xt = np.ones((4, 2)), np.full((4, 2), 0.3)
    den = _fixed_eps_denoiser(linear.ref, [], eps_hat)
    got = ddim_steps(den, linear.diffusion, torch.tensor(xt), [0, -1], torch.Generator(), eta=1.0)
    torch.testing.assert_close(got, den(torch.tensor(xt), torch.zeros(4, dtype=torch.long)).x0)


def test_eta0_is_deterministic_and_draws_no_noise(registry, gmm):
    diffusion, denoiser = gmm
    sampler = registry.create("sampler", "ddim", {"steps": 20})
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = g1.get_state()
    torch.testing.assert_close(sampler.sample(denoiser, diffusion, x, T - 1, g1),
                               sampler.sample(denoiser, diffusion, x, T - 1, g2), rtol=0, atol=0)
    assert torch.equal(g1.get_state(), state)


@pytest.mark.parametrize(
    "params, t_start, expected",
    [
        ({}, 999, 50),
        ({"steps": 10}, 999, 10),
        ({"steps": 1}, 999, 1),
        ({"steps": 2}, 999, 2),
        ({"steps": 1000, "eta": 1.0}, 999, 1000),
        ({"steps": 5000}, 999, 1000),
        ({"steps": 7}, 499, 7),
        ({"steps": 50}, 10, 11),
        ({"steps": 50}, 0, 1),
        ({"steps": 3, "eta": 0.5}, 1, 2),
    ],
)
def test_ddim_nfe_matches_counted_calls(registry, gmm, params, t_start, expected):
    sampler, x, calls = _run(registry, gmm, "ddim", params, 4, t_start=t_start)
    assert sampler.nfe(gmm[0], t_start) == expected == len(calls)
    assert calls[0] == t_start and calls[-1] == (0 if expected > 1 else t_start)
    gaps = np.diff(calls)
    assert np.all(gaps < 0), calls  # distinct, decreasing
    if expected > 2:
        assert gaps.max() - gaps.min() <= 1, calls  # evenly spaced up to rounding
    assert x.shape == (4, 2) and bool(torch.isfinite(x).all())


def test_ddim_one_step_is_the_one_step_jump(registry, gmm):
    """steps = 1 evaluates once at t_start and returns x0_hat: one_step(jump_at = T-1)."""
    _, a, _ = _run(registry, gmm, "ddim", {"steps": 1}, 64, seed=4)
    _, b, _ = _run(registry, gmm, "one_step", {"jump_at": T - 1}, 64, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ddim_jump_at_is_ddim_down_to_t_then_one_jump(linear, registry):
    """ddim(steps = n, jump_at = j): n evaluations, evenly spaced from T-1 down to j, then x0_hat(x_j).
    Checked by hand on a Gaussian N(0, v) whose posterior mean is closed form."""
    from ablate_plugins.samplers import ddim_timesteps

    from ablate import Prediction

    assert ddim_timesteps(999, 10, 100) == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100, -1]
    assert ddim_timesteps(999, 10) == ddim_timesteps(999, 10, 0)
    d, v = linear.diffusion, 0.3
    abar = d.alpha_bars.double()

    def denoiser(x_t, t):
        a = abar[t].view(-1, 1)
        x0 = a.sqrt() * v / (a * v + 1 - a) * x_t
        return Prediction(x0=x0, eps=(x_t - a.sqrt() * x0) / (1 - a).sqrt())

    sampler = registry.create("sampler", "ddim", {"steps": 2, "jump_at": 300})
    x = torch.randn(5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sampler.sample(denoiser, d, x, T - 1, torch.Generator().manual_seed(1))
    first = denoiser(x, torch.full((5,), T - 1))  # one DDIM (eta = 0) step from T-1 to 300, then the jump
    x_300 = abar[300].sqrt() * first.x0 + (1 - abar[300]).sqrt() * first.eps
    assert torch.allclose(out, denoiser(x_300, torch.full((5,), 300)).x0, rtol=1e-12, atol=1e-12)
    assert sampler.nfe(d, T - 1) == 2
