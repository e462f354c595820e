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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ablate.errors import AblateError
from ablate.margins import RELATIVE_REFUSED, Margin, Resolved
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
Group = tuple[str, str]  # (arm, sampler)


class Mechanism(BaseModel):
    """A contrast's declared reading of a diagnostic key: which value means which mechanism. Declared before
    the run like the contrast, so the report's mechanism sentence is computed, never chosen afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(..., description="the diagnostic output key read (e.g. 'spread_ratio')")
    below: float = Field(..., description="the compared group's mean below this value means `below_means`")
    below_means: str = Field(..., description="e.g. 'regression to the mean'")
    above: float = Field(..., description="the compared group's mean above this value means `above_means`")
    above_means: str = Field(..., description="e.g. 'error amplification'")

    @model_validator(mode="after")
    def _ordered(self) -> Mechanism:
        if self.below > self.above:
            raise ValueError(f"below ({self.below}) must not exceed above ({self.above})")
        return self

    def reading(self, value: float) -> str:
        if value < self.below:
            return self.below_means
        if value > self.above:
            return self.above_means
        return f"neither (between {self.below:g} and {self.above:g})"


class ContrastSpec(BaseModel):
    """One `[[contrast]]` table of a study file."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(..., description="the metric output key compared (e.g. 'kid', 'fid')")
    baseline: str = Field(..., description="an arm label (over = 'arm') or a sampler label (over = 'sampler')")
    compare: list[str] = Field(..., min_length=1, description="labels compared with the baseline, one test each")
    over: Literal["arm", "sampler"] = Field("arm", description="whether the labels are arms or samplers")
    sampler: str | None = Field(None, description="over = 'arm': the sampler compared under (default: the first)")
    arm: str | None = Field(None, description="over = 'sampler': the arm compared within (default: every arm)")
    margin: float | None = Field(None, gt=0, description="equivalence margin of the TOST, in the metric's units")
    margin_floor_sd: float | None = Field(None, gt=0, description="the margin as this multiple of the sd over seeds "
                                          "of the metric's real-data floor (instead of `margin`; resolved by the report)")
    relative: bool | None = Field(None, exclude=True, description="refused when true: a margin is never a fraction "
                                  "of the baseline's value")
    name: str = Field("", description="a label for the report")
    expected: Literal["better", "worse", "equivalent"] | None = Field(
        None, description="what a prior finding says of `compare` against `baseline`; the report says whether this agrees")
    source: str = Field("", description="where the prior finding is from (e.g. 'Ho et al. 2020')")
    mechanism: Mechanism | None = Field(None, description="a diagnostic key whose value names the mechanism behind "
                                        "the difference (the report computes the sentence from it)")

    @field_validator("relative")
    @classmethod
    def _not_relative(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(RELATIVE_REFUSED)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContrastSpec:
        if (self.margin is None) == (self.margin_floor_sd is None):
            raise ValueError("give the equivalence margin as exactly one of `margin` (absolute, in the metric's units) "
                             "and `margin_floor_sd` (a multiple of the sd over seeds of the metric's real-data floor)")
        if self.over == "arm" and self.arm is not None:
            raise ValueError("`arm` is for over = \"sampler\"; a contrast of arms picks its sampler with `sampler`")
        if self.over == "sampler" and self.sampler is not None:
            raise ValueError("`sampler` is for over = \"arm\"; a contrast of samplers picks its arm with `arm`")
        if self.baseline in self.compare:
            raise ValueError(f"compare lists the baseline {self.baseline!r}")
        if len(set(self.compare)) != len(self.compare):
            raise ValueError("compare lists a label twice")
        return self


def check(spec: ContrastSpec, arms: Sequence[str], samplers: Sequence[str]) -> list[str]:
    """Errors ('baseline: no arm ...') for labels that are not in the study; keys relative to the spec."""
    kind, known = ("arm", arms) if spec.over == "arm" else ("sampler", samplers)
    listing = f"{kind}s: {', '.join(known)}"
    errors = [f"baseline: no {kind} {spec.baseline!r} in this study; {listing}"] if spec.baseline not in known else []
    errors += [f"compare[{i}]: no {kind} {c!r} in this study; {listing}" for i, c in enumerate(spec.compare) if c not in known]
    if spec.sampler is not None and spec.sampler not in samplers:
        errors.append(f"sampler: no sampler {spec.sampler!r} in this study; samplers: {', '.join(samplers)}")
    if spec.arm is not None and spec.arm not in arms:
        errors.append(f"arm: no arm {spec.arm!r} in this study; arms: {', '.join(arms)}")
    return errors


@dataclass(frozen=True)
class Comparison:
    """One concrete test: the compare group against the baseline group, on one key."""

    key: str
    baseline: Group
    compare: Group
    margin: Margin
    name: str = ""
    expected: str | None = None
    source: str = ""
    mechanism: Mechanism | None = None

    @property
    def title(self) -> str:
        (b_arm, b_sampler), (c_arm, c_sampler) = self.baseline, self.compare
        if b_sampler == c_sampler:
            return f"{c_arm} vs {b_arm} ({self.key}, {b_sampler})"
        return f"{c_sampler} vs {b_sampler} ({self.key}, {b_arm})"


def _spec(raw: ContrastSpec | Mapping[str, Any]) -> tuple[ContrastSpec, Margin]:
    """The spec and its margin. A run recorded before relative margins were refused may hold one: its
    report tests no equivalence for it and says why."""
    if isinstance(raw, ContrastSpec):
        return raw, Margin(raw.margin, raw.margin_floor_sd)
    table = dict(raw)
    if table.pop("relative", False):
        spec = ContrastSpec.model_validate(table)
        return spec, Margin(legacy=f"the margin was declared as {spec.margin:g} × the baseline's mean, a relative margin, "
                                   "which is no longer used (rerun with an absolute `margin` or `margin_floor_sd`)")
    spec = ContrastSpec.model_validate(table)
    return spec, Margin(spec.margin, spec.margin_floor_sd)


def expand(specs: Iterable[ContrastSpec | Mapping[str, Any]], arms: Sequence[str], samplers: Sequence[str]) -> list[Comparison]:
    """Concrete tests: one per compared label, and one per arm for a sampler contrast without `arm`."""
    out = []
    for raw in specs:
        spec, margin = _spec(raw)
        if spec.over == "arm":
            sampler = spec.sampler if spec.sampler is not None else samplers[0]
            pairs = [((spec.baseline, sampler), (c, sampler)) for c in spec.compare]
        else:
            within = [spec.arm] if spec.arm is not None else list(arms)
            pairs = [((a, spec.baseline), (a, c)) for a in within for c in spec.compare]
        out += [Comparison(spec.metric, b, c, margin, spec.name, spec.expected, spec.source, spec.mechanism)
                for b, c in pairs]
    return out


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
