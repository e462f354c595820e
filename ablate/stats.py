"""Statistics for reports: t intervals over seeds, paired tests, equivalence, power, Holm's correction.

Seeds are few (3-8), so intervals use the t distribution. Arms trained at the same seed share
their random numbers, so declared contrasts are tested on per-seed differences (paired t, with an
exact sign-flip permutation test and a bootstrap beside it); Welch's unequal-variance test is kept
for unpaired comparisons, though the report pairs every comparison on seeds. "No difference" needs TOST with a margin, and Holm's step-down
method controls the family-wise error of the declared contrasts. Everything random is seeded, so a
regenerated report is byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean and two-sided t interval: mean ± t_{n-1, (1+level)/2} · s / sqrt(n)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value; NaN when either side has fewer than 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return (math.nan, 1.0) if a.mean() == b.mean() else (math.copysign(math.inf, a.mean() - b.mean()), 0.0)
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


# Paired analysis: every arm is trained at the same seeds with common random numbers, so the
# per-seed differences d_i = compare_i - baseline_i remove the seed-to-seed spread both arms share.


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)


@dataclass(frozen=True)
class PairedT:
    """Paired t on differences: mean difference, its t interval, t statistic and two-sided p."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    t: float
    p: float


def paired_t(diffs: Sequence[float], level: float = 0.95) -> PairedT:
    """One-sample t on per-seed differences (= scipy.stats.ttest_rel on the pairs).

    Differences with no spread give t = ±inf, p = 0 (or p = 1 when all are zero), where scipy gives NaN.
    """
    s = mean_ci(diffs, level)
    if s.n < 2:
        return PairedT(s.n, s.mean, s.std, s.low, s.high, math.nan, math.nan)
    if s.std == 0:
        t, p = (math.nan, 1.0) if s.mean == 0 else (math.copysign(math.inf, s.mean), 0.0)
    else:
        t = s.mean / (s.std / math.sqrt(s.n))
        p = float(2 * stats.t.sf(abs(t), s.n - 1))
    return PairedT(s.n, s.mean, s.std, s.low, s.high, t, p)


@dataclass(frozen=True)
class SignFlip:
    """Sign-flip permutation test of a zero mean difference.

    `min_p` is the smallest p the test can give with n pairs (2 / 2^n exactly), so a report can say
    when too few seeds make 0.05 unreachable whatever the data.
    """

    n: int
    p: float
    min_p: float
    exact: bool

    @property
    def can_reach(self) -> bool:
        return self.min_p < 0.05


def sign_flip_min_seeds(alpha: float = 0.05) -> int:
    """The fewest pairs whose exact two-sided sign-flip test can be significant: the smallest p is
    2 / 2^n, so n with 2 / 2^n < alpha (6 at 0.05)."""
    n = 1
    while 2 / 2**n >= alpha:
        n += 1
    return n


EXACT_FLIPS = 20  # 2^20 sign vectors; more pairs use a seeded random sample of flips


def sign_flip(diffs: Sequence[float], resamples: int = 100_000, seed: int = 0) -> SignFlip:
    """Two-sided p = share of sign flips whose |mean| reaches the observed |mean|.

    Under H0 (exchangeable pairs) each difference is as likely negated; with n <= EXACT_FLIPS all 2^n
    flips are enumerated (p as scipy.stats.permutation_test with permutation_type='samples').
    """
    d = _finite(diffs)
    n = len(d)
    if n == 0:
        return SignFlip(0, math.nan, math.nan, True)
    exact = n <= EXACT_FLIPS
    if exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(resamples, n))
    observed = abs(d.mean())
    null = np.abs(signs @ d / n)
    reach = int(np.count_nonzero(null >= observed - 100 * np.finfo(float).eps * observed))
    p = reach / len(signs) if exact else (reach + 1) / (len(signs) + 1)
    return SignFlip(n, min(1.0, p), min(1.0, 2 / 2**n), exact)


@dataclass(frozen=True)
class Bootstrap:
    n: int
    low: float
    high: float
    resamples: int


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 9999, seed: int = 0) -> Bootstrap:
    """Percentile bootstrap interval of the mean over seeds, from a fixed seed so reports are reproducible.

    Same resamples and quantiles as scipy.stats.bootstrap(method='percentile', rng=default_rng(seed)).
    With few seeds it is narrow (it never leaves the range of the data): read it beside the t interval.
    """
    x = _finite(values)
    n = len(x)
    if n < 2:
        return Bootstrap(n, math.nan, math.nan, resamples)
    means = x[np.random.default_rng(seed).integers(0, n, (resamples, n))].mean(axis=-1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Bootstrap(n, float(low), float(high), resamples)


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests of |mean difference| < margin: equivalent when both reject."""

    n: int
    margin: float
    p_lower: float
    p_upper: float

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper)

    def equivalent(self, alpha: float = 0.05) -> bool:
        return self.p < alpha


def tost(diffs: Sequence[float], margin: float) -> Tost:
    """p_lower tests H0: mean <= -margin, p_upper tests H0: mean >= +margin (paired t, df = n - 1)."""
    d = _finite(diffs)
    n = len(d)
    if n < 2 or not margin > 0:
        return Tost(n, margin, math.nan, math.nan)
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0:
        return Tost(n, margin, float(mean <= -margin), float(mean >= margin))
    se = std / math.sqrt(n)
    return Tost(n, margin, float(stats.t.sf((mean + margin) / se, n - 1)), float(stats.t.cdf((mean - margin) / se, n - 1)))


def paired_power(n: int, sd: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs when the true mean difference is delta."""
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = delta / (sd / math.sqrt(n))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(sd: float, delta: float, power: float = 0.8, alpha: float = 0.05, most: int = 10_000) -> int | None:
    """Smallest n >= 2 whose paired t-test has `power` to detect a mean difference of delta (noncentral t).

    None when sd or delta is unusable, or when even `most` seeds are not enough.
    """
    if not (math.isfinite(sd) and math.isfinite(delta) and delta != 0 and sd >= 0):
        return None
    if sd == 0:
        return 2
    return next((n for n in range(2, most + 1) if paired_power(n, sd, abs(delta), alpha) >= power), None)


@dataclass(frozen=True)
class PositiveInterval:
    """An interval for a non-negative metric's mean that stays at or above zero.

    `center` is the estimate the interval belongs to (the geometric mean for the log-scale interval,
    the arithmetic mean for the bootstrap); `method` says which, in words for the report.
    """

    n: int
    center: float
    low: float
    high: float
    method: str


LOG_T = "geometric mean, t interval on log values"
BOOT_CLIPPED = "mean, bootstrap percentile interval over seeds clipped at 0"


def nonnegative_ci(values: Sequence[float], level: float = 0.95, resamples: int = 9999, seed: int = 0) -> PositiveInterval:
    """Log-scale t interval when every value is positive (FID); otherwise (KID's unbiased estimate can
    dip below zero) the seeded percentile bootstrap of the mean, clipped at 0."""
    x = _finite(values)
    if len(x) and np.all(x > 0):
        s = mean_ci(np.log(x).tolist(), level)
        return PositiveInterval(s.n, math.exp(s.mean), math.exp(s.low), math.exp(s.high), LOG_T)
    return clipped_bootstrap(x.tolist(), level, resamples, seed)


def clipped_bootstrap(values: Sequence[float], level: float = 0.95, resamples: int = 9999, seed: int = 0) -> PositiveInterval:
    """The arithmetic mean with its seeded percentile bootstrap interval, clipped at 0: inside [min, max]
    of the values when they are positive, and never below zero when some dip under it (KID)."""
    x = _finite(values)
    b = bootstrap_ci(x.tolist(), level, resamples, seed)
    mean = float(x.mean()) if len(x) else math.nan
    return PositiveInterval(b.n, mean, max(0.0, b.low), max(0.0, b.high), BOOT_CLIPPED)
