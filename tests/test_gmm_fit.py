"""gmm_fit (issue 17.3): a sample set with many samples off every mode must never come out best on the
headline (sw2, issue 21) or the NLL, even when its mode shares are exact and a proper draw's are not
(what the old headline, max_weight_error, rewarded)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ablate import EvalContext
from ablate.plugins import load_registry

N, N_MODES, RADIUS, STD = 2000, 8, 0.75, 0.06
MEANS = RADIUS * np.stack([np.cos(2 * math.pi * np.arange(N_MODES) / N_MODES),
                           np.sin(2 * math.pi * np.arange(N_MODES) / N_MODES)], axis=1)


@pytest.fixture(scope="module")
def setup():
    registry = load_registry([])
    data = registry.create("dataset", "gmm2d", {"n_train": 100, "n_test": N}).load()
    ctx = EvalContext(data=data, denoiser=None, diffusion=None, device=torch.device("cpu"), cache_dir=Path("."),
                      generator=torch.Generator())
    metric = registry.create("metric", "gmm_fit")
    return lambda x: metric.evaluate(torch.as_tensor(x), data.test, ctx), type(metric)


def good(rng) -> np.ndarray:
    """A proper draw from the mixture: multinomial mode counts, so the shares are off by sampling noise."""
    k = rng.integers(N_MODES, size=N)
    return MEANS[k] + STD * rng.standard_normal((N, 2))


def off_mode(rng, fraction: float) -> np.ndarray:
    """Exactly N/8 points per mode; `fraction` of them pushed 6 std outward, outside the 0.999 ellipse."""
    k = np.repeat(np.arange(N_MODES), N // N_MODES)
    x = MEANS[k] + STD * rng.standard_normal((N, 2))
    pushed = rng.permutation(N)[: int(fraction * N)]
    x[pushed] += 6 * STD * MEANS[k[pushed]] / RADIUS
    return x


def test_directions_of_the_keys(setup):
    _, cls = setup
    assert cls.keys["sw2"].direction == "lower" and cls.keys["nll"].direction == "lower"
    assert cls.keys["modes_covered"].direction == "higher" and cls.keys["std_ratio"].direction == "none"
    assert {cls.keys[k].direction for k in ("max_weight_error", "off_mode_fraction", "off_manifold")} == {"lower"}


def test_nll_is_the_mixture_negative_log_likelihood(setup):
    evaluate, _ = setup
    x = good(np.random.default_rng(0))
    density = sum(multivariate_normal(m, STD**2 * np.eye(2)).pdf(x) for m in MEANS) / N_MODES
    assert evaluate(x)["nll"] == pytest.approx(-np.log(density).mean(), rel=1e-9)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.4])
@pytest.mark.parametrize("seed", range(4))
def test_off_mode_samples_never_score_best(setup, fraction, seed):
    evaluate, _ = setup
    rng = np.random.default_rng(seed)
    a, b = evaluate(good(rng)), evaluate(off_mode(rng, fraction))
    assert b["max_weight_error"] < a["max_weight_error"]  # the trap: exact shares look better on this key
    assert b["off_mode_fraction"] == pytest.approx(fraction, abs=0.01)
    assert b["nll"] > a["nll"] and b["sw2"] > a["sw2"]


def test_a_spread_no_mode_can_measure_is_left_out_not_nan(setup):
    """Two points per mode are too few for a spread: std_ratio is left out (a NaN would fail the whole
    evaluation, ablate.faults), and the rest is still scored."""
    score, _ = setup
    out = score(np.repeat(MEANS, 2, axis=0))
    assert "std_ratio" not in out and out["modes_covered"] == 1.0 and out["max_weight_error"] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isfinite(v) for v in out.values())
    assert "std_ratio" in score(np.repeat(MEANS, 3, axis=0))
