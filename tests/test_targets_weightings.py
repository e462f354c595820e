"""Prediction targets (epsilon, x0, v) and loss weightings, against closed forms in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TARGETS = ["epsilon", "x0", "v"]


def _draw(ref, n: int = 64, d: int = 4, seed: int = 0):
    """t (including 0 and T-1), x0, eps, x_t = sqrt(abar) x0 + sqrt(1-abar) eps, all float64 numpy."""
    rng = np.random.default_rng(seed)
    t = np.concatenate([[0, 1, ref.T - 2, ref.T - 1], rng.integers(0, ref.T, n - 4)])
    x0 = rng.uniform(-1, 1, size=(n, d))
    eps = rng.normal(size=(n, d))
    a, s = np.sqrt(ref.abar[t])[:, None], np.sqrt(1 - ref.abar[t])[:, None]
    return t, x0, eps, a * x0 + s * eps, a, s


def _target_value(name: str, x0, eps, a, s):
    """What each target's network should output, by its definition."""
    return {"epsilon": eps, "x0": x0, "v": a * eps - s * x0}[name]


def _output_for_x0_hat(name: str, x0_hat, xt, a, s):
    """The network output that a prediction x0_hat at fixed x_t corresponds to, for each target."""
    eps_hat = (xt - a * x0_hat) / s
    return _target_value(name, x0_hat, eps_hat, a, s)


@pytest.mark.parametrize("name", TARGETS)
def test_training_target_definition(registry, schedule, name):
    target = registry.create("target", name)
    t, x0, eps, xt, a, s = _draw(schedule.ref)
    got = target.training_target(schedule.diffusion, torch.tensor(x0), torch.tensor(eps), torch.tensor(t))
    np.testing.assert_allclose(got.numpy(), _target_value(name, x0, eps, a, s), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", TARGETS)
def test_to_prediction_round_trips(registry, schedule, name):
    target, d = registry.create("target", name), schedule.diffusion
    t, x0, eps, xt, a, s = _draw(schedule.ref, seed=1)
    tt, x0_t, eps_t = torch.tensor(t), torch.tensor(x0), torch.tensor(eps)
    xt_t = d.q_sample(x0_t, tt, eps_t)
    out = target.training_target(d, x0_t, eps_t, tt)
    pred = target.to_prediction(d, xt_t, tt, out)
    # 1/sqrt(abar) reaches ~2e4 at the end of the cosine schedule: float64 keeps errors ~1e-12
    np.testing.assert_allclose(pred.x0.numpy(), x0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred.eps.numpy(), eps, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", TARGETS)
def test_to_prediction_of_arbitrary_output_is_consistent_with_x_t(registry, schedule, name):
    """Whatever the network outputs, the (x0, eps) it implies satisfy x_t = sqrt(abar) x0 + sqrt(1-abar) eps."""
    target, d = registry.create("target", name), schedule.diffusion
    t, _, _, xt, a, s = _draw(schedule.ref, seed=2)
    out = np.random.default_rng(5).normal(size=xt.shape)
    pred = target.to_prediction(d, torch.tensor(xt), torch.tensor(t), torch.tensor(out))
    np.testing.assert_allclose(a * pred.x0.numpy() + s * pred.eps.numpy(), xt, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", TARGETS)
def test_x0_error_scale_by_perturbation(registry, schedule, name):
    """|change of the target output| / |change of x0_hat| at fixed x_t equals s(t)."""
    target, d = registry.create("target", name), schedule.diffusion
    t, x0, eps, xt, a, s = _draw(schedule.ref, seed=3)
    delta = 1e-3 * np.random.default_rng(4).normal(size=x0.shape)
    out = _output_for_x0_hat(name, x0, xt, a, s)
    out_perturbed = _output_for_x0_hat(name, x0 + delta, xt, a, s)
    ratio = np.linalg.norm(out_perturbed - out, axis=1) / np.linalg.norm(delta, axis=1)
    scale = target.x0_error_scale(d, torch.tensor(t))
    assert scale.dtype == torch.float64 and scale.shape == (len(t),)
    np.testing.assert_allclose(scale.numpy(), ratio, rtol=1e-6)
    # and the perturbed output really decodes to the perturbed x0 under this target's convention
    pred = target.to_prediction(d, torch.tensor(xt), torch.tensor(t), torch.tensor(out_perturbed))
    np.testing.assert_allclose(pred.x0.numpy(), x0 + delta, rtol=0, atol=1e-8)


def test_x0_error_scale_closed_forms(registry, schedule):
    d, ref = schedule.diffusion, schedule.ref
    t = torch.arange(ref.T)
    expected = {"epsilon": np.sqrt(ref.snr), "x0": np.ones(ref.T), "v": 1 / np.sqrt(1 - ref.abar)}
    for name, value in expected.items():
        np.testing.assert_allclose(registry.create("target", name).x0_error_scale(d, t).numpy(), value, rtol=1e-9)


# --------------------------------------------------------------------------- weightings


def _weighted_losses(registry, schedule, target_name, weighting, seed=6):
    """w(t) * per-sample target-space MSE for the SAME x0_hat at fixed x_t, computed in numpy."""
    t, x0, eps, xt, a, s = _draw(schedule.ref, n=128, seed=seed)
    x0_hat = x0 + 0.3 * np.random.default_rng(seed + 100).normal(size=x0.shape)  # an arbitrary network's guess
    out = _output_for_x0_hat(target_name, x0_hat, xt, a, s)
    mse = ((out - _target_value(target_name, x0, eps, a, s)) ** 2).mean(1)
    w = registry.create("weighting", weighting[0], weighting[1]).weights(
        schedule.diffusion, registry.create("target", target_name), torch.tensor(t)
    )
    assert w.shape == (len(t),)
    return w.numpy() * mse, t


@pytest.mark.parametrize("other", ["x0", "v"])
def test_eps_equivalent_gives_epsilon_simple_loss(registry, schedule, other):
    eps_loss, _ = _weighted_losses(registry, schedule, "epsilon", ("simple", {}))
    loss, _ = _weighted_losses(registry, schedule, other, ("eps_equivalent", {}))
    np.testing.assert_allclose(loss, eps_loss, rtol=1e-7)


def test_eps_equivalent_is_one_for_epsilon(registry, schedule):
    w = registry.create("weighting", "eps_equivalent").weights(
        schedule.diffusion, registry.create("target", "epsilon"), torch.arange(schedule.ref.T)
    )
    np.testing.assert_allclose(w.numpy(), 1.0, rtol=1e-10)


def test_simple_is_one_for_every_target(registry, schedule):
    for name in TARGETS:
        w = registry.create("weighting", "simple").weights(
            schedule.diffusion, registry.create("target", name), torch.arange(schedule.ref.T)
        )
        np.testing.assert_array_equal(w.numpy(), 1.0)


def _posterior_variance(ref):
    """beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, by hand."""
    return (1 - ref.abar_prev) / (1 - ref.abar) * ref.betas


@pytest.mark.parametrize("sigma", ["posterior", "beta"])
def test_vlb_for_epsilon_is_ddpm_formula(registry, schedule, sigma):
    ref = schedule.ref
    if sigma == "posterior":
        var = _posterior_variance(ref)
        var[0] = var[1]  # beta~_0 = 0: DDPM uses t=1's value there
        params = {}
    else:
        var = ref.betas.copy()
        params = {"sigma": "beta"}
    expected = ref.betas**2 / (2 * var * (1 - ref.abar) * ref.alphas)
    w = registry.create("weighting", "vlb", params).weights(
        schedule.diffusion, registry.create("target", "epsilon"), torch.arange(ref.T)
    )
    assert np.all(np.isfinite(w.numpy()))
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-9)


def test_vlb_default_sigma_is_posterior(registry):
    assert registry.create("weighting", "vlb").params.sigma == "posterior"


@pytest.mark.parametrize("weighting", [("vlb", {}), ("vlb", {"sigma": "beta"}), ("min_snr", {})])
@pytest.mark.parametrize("other", ["x0", "v"])
def test_converted_weightings_give_the_same_loss_for_every_target(registry, schedule, weighting, other):
    """vlb and min_snr are defined on the eps error; converted per target, the loss must not change."""
    eps_loss, _ = _weighted_losses(registry, schedule, "epsilon", weighting)
    loss, _ = _weighted_losses(registry, schedule, other, weighting)
    np.testing.assert_allclose(loss, eps_loss, rtol=1e-7)


def test_min_snr_for_x0_is_clipped_snr(registry, schedule):
    ref = schedule.ref
    t = torch.arange(ref.T)
    w = registry.create("weighting", "min_snr").weights(schedule.diffusion, registry.create("target", "x0"), t)
    np.testing.assert_allclose(w.numpy(), np.minimum(ref.snr, 5.0), rtol=1e-9)
    w2 = registry.create("weighting", "min_snr", {"gamma": 1.0}).weights(
        schedule.diffusion, registry.create("target", "x0"), t
    )
    np.testing.assert_allclose(w2.numpy(), np.minimum(ref.snr, 1.0), rtol=1e-9)


def test_min_snr_for_epsilon(registry, schedule):
    """Hang et al.: on the eps loss the weight is min(SNR, gamma) / SNR."""
    ref = schedule.ref
    w = registry.create("weighting", "min_snr").weights(
        schedule.diffusion, registry.create("target", "epsilon"), torch.arange(ref.T)
    )
    np.testing.assert_allclose(w.numpy(), np.minimum(ref.snr, 5.0) / ref.snr, rtol=1e-9)
