"""Paired statistics against scipy (ttest_rel, permutation_test, bootstrap, ttest_1samp) and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ablate.stats import (
    BOOT_CLIPPED,
    LOG_T,
    bootstrap_ci,
    nonnegative_ci,
    paired_power,
    paired_t,
    seeds_needed,
    sign_flip,
    tost,
)

PAIRS = [(6, 1), (5, 2), (8, 3), (3, 4), (12, 5)]  # (n, rng seed)


def _pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(10, 2, n)
    return base, base + rng.normal(0.4, 1.0, n)


@pytest.mark.parametrize("n,seed", PAIRS)
def test_paired_t_is_ttest_rel(n, seed):
    base, comp = _pairs(n, seed)
    r = paired_t((comp - base).tolist())
    ref = sps.ttest_rel(comp, base)
    assert r.t == pytest.approx(ref.statistic, rel=1e-12) and r.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_paired_t_without_spread():
    assert paired_t([0.0, 0.0, 0.0]).p == 1.0
    r = paired_t([2.0, 2.0, 2.0])
    assert r.p == 0.0 and r.t == math.inf
    assert math.isnan(paired_t([1.0]).p)


@pytest.mark.parametrize("n,seed", PAIRS)
def test_sign_flip_is_scipy_permutation_test(n, seed):
    base, comp = _pairs(n, seed)
    ref = sps.permutation_test((comp, base), lambda x, y, axis: np.mean(x - y, axis=axis),
                               permutation_type="samples", vectorized=True, n_resamples=np.inf)
    r = sign_flip((comp - base).tolist())
    assert r.exact and r.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.min_p == pytest.approx(2 / 2**n)


def test_sign_flip_by_hand():
    # sums of ±1 ±2 ±3: 6, 4, 2, 0, 0, -2, -4, -6: only the two extremes reach |6| -> 2/8
    r = sign_flip([1.0, 2.0, 3.0])
    assert r.p == pytest.approx(0.25) and r.min_p == pytest.approx(0.25) and not r.can_reach
    # ±1 ±1 ±1 ±3 (sum 6): |sum| >= 6 only for all + and all - -> 2/16
    assert sign_flip([1.0, 1.0, 1.0, 3.0]).p == pytest.approx(2 / 16)
    assert sign_flip([0.0, 0.0]).p == 1.0


def test_sign_flip_smallest_p_by_n():
    # 2 / 2^5 = 0.0625 cannot reach 0.05; 2 / 2^6 = 0.03125 can
    assert sign_flip([1.0] * 5).min_p == pytest.approx(0.0625) and not sign_flip([1.0] * 5).can_reach
    assert sign_flip([1.0] * 6).min_p == pytest.approx(0.03125) and sign_flip([1.0] * 6).can_reach


@pytest.mark.parametrize("n,seed", PAIRS)
def test_bootstrap_is_scipy_percentile_bootstrap(n, seed):
    base, comp = _pairs(n, seed)
    d = comp - base
    ref = sps.bootstrap((d,), np.mean, method="percentile", n_resamples=9999, rng=np.random.default_rng(7))
    r = bootstrap_ci(d.tolist(), seed=7)
    assert (r.low, r.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    assert bootstrap_ci(d.tolist(), seed=7) == r  # seeded: identical when regenerated


def test_bootstrap_stays_within_the_data():
    r = bootstrap_ci([1.0, 2.0, 4.0])
    assert 1.0 <= r.low < r.high <= 4.0


@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_tost_is_two_one_sided_t_tests(margin):
    base, comp = _pairs(8, 11)
    d = comp - base
    r = tost(d.tolist(), margin)
    assert r.p_lower == pytest.approx(sps.ttest_1samp(d, -margin, alternative="greater").pvalue, rel=1e-10)
    assert r.p_upper == pytest.approx(sps.ttest_1samp(d, margin, alternative="less").pvalue, rel=1e-10)
    # equivalent at 0.05 exactly when the 90% t interval lies inside (-margin, margin)
    ci = sps.ttest_1samp(d, 0).confidence_interval(0.90)
    assert r.equivalent() == (-margin < ci.low and ci.high < margin)


def test_tost_without_spread():
    assert tost([0.0, 0.0, 0.0], 0.1).equivalent()
    assert not tost([0.2, 0.2, 0.2], 0.1).equivalent()
    assert math.isnan(tost([0.1, 0.2], 0.0).p)


def test_seeds_needed_matches_power_tables():
    # two-sided paired t, alpha 0.05, 80% power (G*Power): effect d_z = 1 -> 10 pairs, d_z = 0.5 -> 34
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(2.0, 1.0) == 34
    assert seeds_needed(1.0, -0.5) == 34
    assert paired_power(10, 1.0, 1.0) >= 0.8 > paired_power(9, 1.0, 1.0)
    assert seeds_needed(math.nan, 1.0) is None and seeds_needed(0.0, 1.0) == 2


def test_power_by_simulation():
    # n = 10, d_z = 1: the share of simulated paired t-tests with p < 0.05 is the power
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, (20000, 10))
    p = sps.ttest_1samp(d, 0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(paired_power(10, 1.0, 1.0), abs=0.01)


def test_nonnegative_log_interval_by_hand():
    x = [math.e**0, math.e**1, math.e**2]  # logs 0, 1, 2: mean 1, sd 1
    r = nonnegative_ci(x)
    half = 4.302652729911275 / math.sqrt(3)
    assert r.method == LOG_T and r.center == pytest.approx(math.e)
    assert (r.low, r.high) == pytest.approx((math.exp(1 - half), math.exp(1 + half)))


def test_nonnegative_intervals_never_go_below_zero():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        x = np.abs(rng.normal(0.001, 0.01, n)) * rng.choice([1, 1, 1, -0.05], n)  # KID-like, sometimes < 0
        r = nonnegative_ci(x.tolist())
        assert 0 <= r.low <= r.high
        assert r.method == (LOG_T if np.all(x > 0) else BOOT_CLIPPED)
    wide = nonnegative_ci([0.5, 40.0, 1.0])  # the raw t interval goes far below 0 here
    assert wide.low > 0


def test_nonnegative_negative_kid_uses_clipped_bootstrap():
    r = nonnegative_ci([-0.0004, 0.0002, 0.0010])
    assert r.method == BOOT_CLIPPED and r.low == 0.0 and r.high == pytest.approx(0.0010, abs=1e-12)
    assert r.center == pytest.approx(0.0008 / 3)
