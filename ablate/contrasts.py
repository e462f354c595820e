"""Declared contrasts: the questions a study names before it runs, answered with paired statistics.

A `[[contrast]]` table compares arms (under one sampler) or samplers (within an arm) with a baseline
on one metric key. Each compared label is one test; Holm's correction runs over the declared tests
only, so picking the "best" arm after seeing the data cannot inflate the claims. Every test uses the
per-seed differences (arms trained at the same seed share their random numbers). "Better" or "worse"
needs the paired t-test, significant after Holm, and the exact sign-flip permutation test, significant at
alpha, to agree: Holm on the t controls the error over the declared tests, and the permutation test checks
that the direction does not rest on the t's normal model (a skewed difference can fool it). The
permutation test cannot reach 0.05 with five seeds or fewer, so six is the least for a verdict. "No difference" is claimed only when TOST passes with the declared
margin (ablate.margins: absolute, or a multiple of the real-data floor's spread); otherwise the verdict
is "inconclusive". Pairs nobody declared go in a separate table labelled exploratory.

The declaration (the `[[contrast]]` table and its expansion into tests) is ablate.contrast_spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd

from ablate.contrast_spec import Comparison, ContrastSpec, Group, expand
from ablate.errors import AblateError
from ablate.margins import Resolved
from ablate.stats import (
    Bootstrap,
    PairedT,
    SignFlip,
    Tost,
    bootstrap_ci,
    holm,
    paired_t,
    seeds_needed,
    sign_flip,
    sign_flip_min_seeds,
    tost,
)
from ablate.store import REAL_DATA

ALPHA = 0.05
POWER = 0.8
Direction = Literal["lower", "higher", "none"]


@dataclass(frozen=True)
class Outcome:
    """Everything a report says about one comparison."""

    comparison: Comparison
    direction: Direction
    seeds: tuple[int, ...]
    baseline_mean: float
    compare_mean: float
    paired: PairedT
    flip: SignFlip
    boot: Bootstrap
    equivalence: Tost
    margin: Resolved  # in the key's units
    p_holm: float  # the paired t's p after Holm over the declared tests
    needed: int | None  # seeds for 80% power of the paired t at a difference equal to the margin
    diagnostic: tuple[float, float] | None = None  # the declared mechanism key's means: (baseline, compared)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def significant(self) -> bool:
        """The paired t after Holm (the permutation test must agree for a verdict: `kind`)."""
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA

    @property
    def flip_significant(self) -> bool:
        return math.isfinite(self.flip.p) and self.flip.p < ALPHA

    @property
    def kind(self) -> str:
        """better / worse (higher / lower for a key without direction) when both tests are significant (they
        test the same mean difference, so they agree in sign); else equivalent when TOST passes; else
        disagree when only one test is significant; else inconclusive."""
        if self.significant and self.flip_significant:
            d = self.paired.mean
            if self.direction == "none":
                return "higher" if d > 0 else "lower"
            return "better" if (d < 0) == (self.direction == "lower") else "worse"
        if self.equivalence.equivalent(ALPHA):
            return "equivalent"
        return "disagree" if self.significant or self.flip_significant else "inconclusive"

    @property
    def decided(self) -> bool:
        return self.kind not in ("disagree", "inconclusive")

    @property
    def verdict(self) -> str:
        return {"equivalent": "equivalent within margin",
                "disagree": "inconclusive: the paired t and the permutation test disagree",
                "inconclusive": f"inconclusive at n = {self.n}"}.get(self.kind, self.kind)

    @property
    def min_seeds(self) -> int:
        """The fewest seeds with which the permutation test can be significant."""
        return sign_flip_min_seeds(ALPHA)


def paired_values(frame: pd.DataFrame, key: str, baseline: Group, compare: Group) -> tuple[list[int], list[float], list[float]]:
    """Seeds present (with finite values) in both groups, and the two groups' values at those seeds."""
    def series(group: Group) -> pd.Series:
        rows = frame[(frame.key == key) & (frame.arm == group[0]) & (frame.sampler == group[1])]
        rows = rows[rows.value.map(lambda v: v is not None and math.isfinite(v)).astype(bool)]  # empty-safe mask
        if rows.seed.duplicated().any():
            raise AblateError(f"more than one value of {key!r} per seed for {group[0]} / {group[1]}")
        return rows.set_index("seed").value

    b, c = series(baseline), series(compare)
    seeds = sorted(set(b.index) & set(c.index))
    return [int(s) for s in seeds], [float(b[s]) for s in seeds], [float(c[s]) for s in seeds]


def floor_values(frame: pd.DataFrame, key: str, arm: str) -> list[float]:
    """The real-data floor of `key` over seeds for an arm's data: what `margin_floor_sd` multiplies the sd of."""
    rows = frame[(frame.key == key) & (frame.arm == arm) & (frame.sampler == REAL_DATA)]
    return [float(v) for v in rows.value if v is not None and math.isfinite(v)]


def _analyse(frame: pd.DataFrame, comp: Comparison, direction: Direction) -> Outcome:
    seeds, base, comp_values = paired_values(frame, comp.key, comp.baseline, comp.compare)
    diffs = [c - b for b, c in zip(base, comp_values, strict=True)]
    base_mean = sum(base) / len(base) if base else math.nan
    margin = comp.margin.resolve(comp.key, floor_values(frame, comp.key, comp.baseline[0]))
    paired = paired_t(diffs)
    return Outcome(comp, direction, tuple(seeds), base_mean, sum(comp_values) / len(comp_values) if seeds else math.nan,
                   paired, sign_flip(diffs), bootstrap_ci(diffs), tost(diffs, margin.value), margin, math.nan,
                   seeds_needed(paired.std, margin.value, POWER, ALPHA), _diagnostic(frame, comp))


def _diagnostic(frame: pd.DataFrame, comp: Comparison) -> tuple[float, float] | None:
    """The mechanism key's mean over the paired seeds: (baseline, compared), or None (none declared or no values)."""
    if comp.mechanism is None:
        return None
    _, base, values = paired_values(frame, comp.mechanism.key, comp.baseline, comp.compare)
    return (sum(base) / len(base), sum(values) / len(values)) if values else None


def evaluate(frame: pd.DataFrame, specs: Iterable[ContrastSpec | Mapping[str, Any]], directions: Mapping[str, Direction],
             arms: Sequence[str] | None = None, samplers: Sequence[str] | None = None) -> list[Outcome]:
    """Paired analysis of every declared test, Holm-adjusted over the declared tests only.

    frame: columns arm, sampler, seed, key, value (the results at one sample count, with their real-data
    floor rows, which `margin_floor_sd` reads); arms/samplers: study order (default: order of appearance
    in the frame). A key missing from `directions` has direction "none".
    """
    arms = list(arms) if arms is not None else list(dict.fromkeys(frame.arm))
    samplers = list(samplers) if samplers is not None else list(dict.fromkeys(frame.sampler))
    outcomes = [_analyse(frame, c, directions.get(c.key, "none")) for c in expand(specs, arms, samplers)]
    return [replace(o, p_holm=q)
            for o, q in zip(outcomes, holm([o.paired.p for o in outcomes]), strict=True)]
