"""Declared contrasts: the questions a study names before it runs, answered with paired statistics.

A `[[contrast]]` table compares arms (under one sampler) or samplers (within an arm) with a baseline
on one metric key. Each compared label is one test; Holm's correction runs over the declared tests
only, so picking the "best" arm after seeing the data cannot inflate the claims. Every test uses the
per-seed differences (arms trained at the same seed share their random numbers). "No difference" is
claimed only when TOST passes with the declared margin; otherwise the verdict is "inconclusive at n".
Pairs nobody declared go in a separate table labelled exploratory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ablate.errors import AblateError
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
    tost,
)

ALPHA = 0.05
POWER = 0.8
Direction = Literal["lower", "higher", "none"]
Group = tuple[str, str]  # (arm, sampler)


class ContrastSpec(BaseModel):
    """One `[[contrast]]` table of a study file."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(..., description="the metric output key compared (e.g. 'kid', 'fid')")
    baseline: str = Field(..., description="an arm label (over = 'arm') or a sampler label (over = 'sampler')")
    compare: list[str] = Field(..., min_length=1, description="labels compared with the baseline, one test each")
    over: Literal["arm", "sampler"] = Field("arm", description="whether the labels are arms or samplers")
    sampler: str | None = Field(None, description="over = 'arm': the sampler compared under (default: the first)")
    arm: str | None = Field(None, description="over = 'sampler': the arm compared within (default: every arm)")
    margin: float = Field(..., gt=0, description="equivalence margin of the TOST")
    relative: bool = Field(True, description="margin as a fraction of the baseline mean (false: absolute units)")
    name: str = Field("", description="a label for the report")
    expected: Literal["better", "worse", "equivalent"] | None = Field(
        None, description="what a prior finding says of `compare` against `baseline`; the report says whether this agrees")
    source: str = Field("", description="where the prior finding is from (e.g. 'Ho et al. 2020')")

    @model_validator(mode="after")
    def _consistent(self) -> ContrastSpec:
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
    margin: float
    relative: bool
    name: str = ""
    expected: str | None = None
    source: str = ""

    @property
    def title(self) -> str:
        (b_arm, b_sampler), (c_arm, c_sampler) = self.baseline, self.compare
        if b_sampler == c_sampler:
            return f"{c_arm} vs {b_arm} ({self.key}, {b_sampler})"
        return f"{c_sampler} vs {b_sampler} ({self.key}, {b_arm})"


def expand(specs: Iterable[ContrastSpec | Mapping[str, Any]], arms: Sequence[str], samplers: Sequence[str]) -> list[Comparison]:
    """Concrete tests: one per compared label, and one per arm for a sampler contrast without `arm`."""
    out = []
    for raw in specs:
        spec = raw if isinstance(raw, ContrastSpec) else ContrastSpec.model_validate(raw)
        if spec.over == "arm":
            sampler = spec.sampler if spec.sampler is not None else samplers[0]
            pairs = [((spec.baseline, sampler), (c, sampler)) for c in spec.compare]
        else:
            within = [spec.arm] if spec.arm is not None else list(arms)
            pairs = [((a, spec.baseline), (a, c)) for a in within for c in spec.compare]
        out += [Comparison(spec.metric, b, c, spec.margin, spec.relative, spec.name, spec.expected, spec.source)
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
    margin: float  # in the key's units
    p_holm: float
    needed: int | None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA

    @property
    def verdict(self) -> str:
        d = self.paired.mean
        if self.significant:
            if self.direction == "none":
                return "higher" if d > 0 else "lower"
            return "better" if (d < 0) == (self.direction == "lower") else "worse"
        if self.equivalence.equivalent(ALPHA):
            return "equivalent within margin"
        return f"inconclusive at n = {self.n}"


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


def _analyse(frame: pd.DataFrame, comp: Comparison, direction: Direction) -> Outcome:
    seeds, base, comp_values = paired_values(frame, comp.key, comp.baseline, comp.compare)
    diffs = [c - b for b, c in zip(base, comp_values, strict=True)]
    base_mean = sum(base) / len(base) if base else math.nan
    margin = comp.margin * abs(base_mean) if comp.relative else comp.margin
    paired = paired_t(diffs)
    return Outcome(comp, direction, tuple(seeds), base_mean, sum(comp_values) / len(comp_values) if seeds else math.nan,
                   paired, sign_flip(diffs), bootstrap_ci(diffs), tost(diffs, margin), margin, math.nan,
                   seeds_needed(paired.std, margin, POWER, ALPHA))


def evaluate(frame: pd.DataFrame, specs: Iterable[ContrastSpec | Mapping[str, Any]], directions: Mapping[str, Direction],
             arms: Sequence[str] | None = None, samplers: Sequence[str] | None = None) -> list[Outcome]:
    """Paired analysis of every declared test, Holm-adjusted over the declared tests only.

    frame: columns arm, sampler, seed, key, value (final results); arms/samplers: study order
    (default: order of appearance in the frame). A key missing from `directions` has direction "none".
    """
    arms = list(arms) if arms is not None else list(dict.fromkeys(frame.arm))
    samplers = list(samplers) if samplers is not None else list(dict.fromkeys(frame.sampler))
    outcomes = [_analyse(frame, c, directions.get(c.key, "none")) for c in expand(specs, arms, samplers)]
    adjusted = holm([o.paired.p for o in outcomes])
    return [replace(o, p_holm=q) for o, q in zip(outcomes, adjusted, strict=True)]


# Text: markdown lines for the report.


def fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.4g}"


def fmt_p(p: float) -> str:
    return "–" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _p_is(p: float) -> str:
    """'p = 0.012' / 'p < 0.001' for running text."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _ci(low: float, high: float) -> str:
    return f"{fmt(low)} to {fmt(high)}"


def contrast_table(outcomes: Sequence[Outcome]) -> list[str]:
    """One row per declared test: difference (compare - baseline) with its t and bootstrap intervals, p-values, verdict."""
    lines = ["| contrast | n | baseline | compared | difference [95% t CI] | bootstrap 95% CI | paired t p | Holm p "
             "| permutation p | TOST p (margin) | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c = o.comparison
        lines.append(f"| {c.name + ': ' if c.name else ''}{c.title} | {o.n} | {fmt(o.baseline_mean)} | {fmt(o.compare_mean)} | "
                     f"{fmt(o.paired.mean)} [{_ci(o.paired.low, o.paired.high)}] | {_ci(o.boot.low, o.boot.high)} | "
                     f"{fmt_p(o.paired.p)} | {fmt_p(o.p_holm)} | {fmt_p(o.flip.p)} | "
                     f"{fmt_p(o.equivalence.p)} (±{fmt(o.margin)}) | {o.verdict} |")
    return lines


def _reach(flip: SignFlip) -> str:
    if flip.n == 0 or flip.can_reach:
        return ""
    return (f"; with {flip.n} seeds the {2 ** flip.n} sign flips cannot give p below {fmt(flip.min_p)}, "
            f"so the permutation test cannot reach {ALPHA} whatever the data")


def conclusion(o: Outcome) -> str:
    """One sentence answering a declared test: direction, size with CI, paired and permutation p, verdict."""
    c = o.comparison
    (b_arm, b_sampler), (c_arm, c_sampler) = c.baseline, c.compare
    base, comp = (b_arm, c_arm) if b_sampler == c_sampler else (b_sampler, c_sampler)
    head = f"**{c.name or c.title}**: "
    if o.n < 2:
        return head + f"{o.n} paired seed{'s' if o.n != 1 else ''}, too few for a test; verdict: {o.verdict}."
    d = o.paired.mean
    side = "higher" if d > 0 else "lower" if d < 0 else "no different"
    better = {"lower": ", lower is better", "higher": ", higher is better"}.get(o.direction, "")
    size = f"{c.key} {side} than {base} by {fmt(abs(d))}" if d else f"{c.key} equal to {base} at every seed"
    tail = ""
    if o.significant and o.equivalence.equivalent(ALPHA):
        tail = f", though within the equivalence margin ±{fmt(o.margin)}"
    elif o.verdict.startswith("inconclusive"):
        tail = f": neither a difference nor equivalence within ±{fmt(o.margin)} is shown (TOST p {fmt_p(o.equivalence.p)})"
    return (head + f"{comp} has {size} (mean difference {fmt(d)}, 95% CI {_ci(o.paired.low, o.paired.high)}; "
            f"bootstrap {_ci(o.boot.low, o.boot.high)}; n = {o.n} seeds{better}); paired t {_p_is(o.paired.p)} "
            f"(Holm {_p_is(o.p_holm)}), permutation {_p_is(o.flip.p)}{_reach(o.flip)}. "
            f"Verdict: {o.verdict}{tail}.{agreement(o)}")


def agreement(o: Outcome) -> str:
    """' It agrees with Ho et al. 2020 (...)': the verdict against the declared prior finding, if any."""
    c = o.comparison
    if c.expected is None:
        return ""
    expected = "equivalent within margin" if c.expected == "equivalent" else c.expected
    said = f"{c.source or 'the prior finding'}, which found it {c.expected}"
    if o.verdict == expected:
        return f" This agrees with {said}."
    if o.verdict.startswith("inconclusive"):
        return f" This neither confirms nor contradicts {said}."
    return f" This disagrees with {said}."


def seeds_sentence(o: Outcome) -> str:
    """How many seeds would detect a difference equal to the margin, at 80% power, from the observed spread."""
    head = f"**{o.comparison.name or o.comparison.title}**: "
    if o.needed is None:
        return head + "the seeds needed cannot be estimated (fewer than 2 paired seeds, or no margin)."
    return (head + f"detecting a difference of {fmt(o.margin)} (the margin) with {POWER:.0%} power at alpha {ALPHA} "
            f"(two-sided paired t) takes about {o.needed} seeds, given the observed SD of the differences "
            f"{fmt(o.paired.std)} (this study has {o.n}).")


def per_seed_table(frame: pd.DataFrame, key: str, groups: Sequence[Group] | None = None) -> list[str]:
    """Each seed's value of `key` per arm and sampler, so a reader can redo any test."""
    rows = frame[frame.key == key]
    groups = list(groups) if groups is not None else list(dict.fromkeys(zip(rows.arm, rows.sampler, strict=True)))
    seeds = sorted({int(s) for s in rows.seed})
    lines = [f"| arm | sampler | {' | '.join(f'seed {s}' for s in seeds)} |", "|---|---|" + "---|" * len(seeds)]
    for arm, sampler in groups:
        values = rows[(rows.arm == arm) & (rows.sampler == sampler)].set_index("seed").value
        lines.append(f"| {arm} | {sampler} | " + " | ".join(fmt(values.get(s)) for s in seeds) + " |")
    return lines


def exploratory_table(frame: pd.DataFrame, key: str, groups: Sequence[Group] | None = None,
                      declared: Iterable[Outcome] = (), keep: Callable[[Group, Group], bool] | None = None) -> list[str]:
    """Paired tests of the pairs of (arm, sampler) groups that differ in one factor (same arm or same
    sampler) and were not declared as a contrast, labelled exploratory.

    Holm runs over these pairs as a family of their own; none of them is a claim of the study.
    """
    rows = frame[frame.key == key]
    groups = list(groups) if groups is not None else list(dict.fromkeys(zip(rows.arm, rows.sampler, strict=True)))
    skip = {frozenset((o.comparison.baseline, o.comparison.compare)) for o in declared if o.comparison.key == key}
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1:]
             if (a[0] == b[0] or a[1] == b[1]) and frozenset((a, b)) not in skip and (keep is None or keep(a, b))]
    results = []
    for a, b in pairs:
        _, va, vb = paired_values(frame, key, a, b)
        diffs = [y - x for x, y in zip(va, vb, strict=True)]
        results.append((paired_t(diffs), sign_flip(diffs)))
    adjusted = holm([t.p for t, _ in results])
    lines = [f"Exploratory (not declared as contrasts; Holm over these {len(pairs)} pairs only): paired differences "
             f"in {key}, B - A, over the seeds both have.", "",
             "| A | B | n | B - A [95% t CI] | paired t p | Holm p | permutation p |", "|---|---|---|---|---|---|---|"]
    for (a, b), (t, flip), q in zip(pairs, results, adjusted, strict=True):
        lines.append(f"| {a[0]} / {a[1]} | {b[0]} / {b[1]} | {t.n} | {fmt(t.mean)} [{_ci(t.low, t.high)}] | "
                     f"{fmt_p(t.p)} | {fmt_p(q)} | {fmt_p(flip.p)} |")
    return lines
