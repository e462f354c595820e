"""Markdown of the declared contrasts (ablate.contrasts): the table, one conclusion sentence per test, the
margins as resolved, the seeds a verdict still needs, the per-seed values and the exploratory pairs.

The seed-count caveat of the permutation test is one paragraph per report (`seed_caveat`), not a clause
repeated in every sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from ablate.contrasts import ALPHA, POWER, Group, Outcome, paired_values
from ablate.stats import holm, paired_t, sign_flip


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


def title(o: Outcome) -> str:
    return o.comparison.name or o.comparison.title


def contrast_table(outcomes: Sequence[Outcome]) -> list[str]:
    """One row per declared test: difference (compare - baseline) with its t and bootstrap intervals, p-values
    before and after Holm, the TOST p with its margin, and the verdict."""
    lines = ["| contrast | n | baseline | compared | difference [95% t CI] | bootstrap 95% CI | paired t p (Holm) "
             "| permutation p | TOST p (margin) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c = o.comparison
        lines.append(f"| {c.name + ': ' if c.name else ''}{c.title} | {o.n} | {fmt(o.baseline_mean)} | {fmt(o.compare_mean)} | "
                     f"{fmt(o.paired.mean)} [{_ci(o.paired.low, o.paired.high)}] | {_ci(o.boot.low, o.boot.high)} | "
                     f"{fmt_p(o.paired.p)} ({fmt_p(o.p_holm)}) | {fmt_p(o.flip.p)} | "
                     f"{fmt_p(o.equivalence.p)} (±{fmt(o.margin.value)}) | {o.verdict} |")
    return lines


def _tail(o: Outcome) -> str:
    """What the verdict leaves open: a difference inside the margin, or equivalence not shown (and why)."""
    margin = f"±{fmt(o.margin.value)}"
    if o.decided and o.kind != "equivalent" and o.equivalence.equivalent(ALPHA):
        return f", though within the equivalence margin {margin}"
    if o.decided:
        return ""
    if not o.margin.usable:
        return f"; equivalence cannot be tested: {o.margin.how}"
    if o.kind == "disagree":
        return f"; equivalence within {margin} is not shown either (TOST p {fmt_p(o.equivalence.p)})"
    return f": neither a difference nor equivalence within {margin} is shown (TOST p {fmt_p(o.equivalence.p)})"


def conclusion(o: Outcome) -> str:
    """One sentence answering a declared test: direction, size with CI, both tests' p, verdict."""
    c = o.comparison
    (b_arm, b_sampler), (c_arm, c_sampler) = c.baseline, c.compare
    base, comp = (b_arm, c_arm) if b_sampler == c_sampler else (b_sampler, c_sampler)
    head = f"**{title(o)}**: "
    if o.n < 2:
        return head + f"{o.n} paired seed{'s' if o.n != 1 else ''}, too few for a test; verdict: {o.verdict}."
    d = o.paired.mean
    side = "higher" if d > 0 else "lower" if d < 0 else "no different"
    better = {"lower": ", lower is better", "higher": ", higher is better"}.get(o.direction, "")
    size = f"{c.key} {side} than {base} by {fmt(abs(d))}" if d else f"{c.key} equal to {base} at every seed"
    return (head + f"{comp} has {size} (mean difference {fmt(d)}, 95% CI {_ci(o.paired.low, o.paired.high)}; "
            f"bootstrap {_ci(o.boot.low, o.boot.high)}; n = {o.n} seeds{better}); paired t {_p_is(o.paired.p)} "
            f"(Holm {_p_is(o.p_holm)}), permutation {_p_is(o.flip.p)}. "
            f"Verdict: {o.verdict}{_tail(o)}.{agreement(o)}{mechanism(o, base, comp)}")


def mechanism(o: Outcome, base: str, comp: str) -> str:
    """' Mechanism (declared: spread_ratio): ...': the declared diagnostic's reading, computed from its means."""
    m, values = o.comparison.mechanism, o.diagnostic
    if m is None or values is None:
        return ""
    ratio = f" ({fmt(values[1] / values[0])} times)" if values[0] else ""
    return (f" Mechanism (declared reading of {m.key}): {comp} has {m.key} {fmt(values[1])} against {fmt(values[0])} "
            f"for {base}{ratio}: {m.reading(*values)}.")


def agreement(o: Outcome) -> str:
    """' It agrees with Ho et al. 2020 (...)': the verdict against the declared prior finding, if any."""
    c = o.comparison
    if c.expected is None:
        return ""
    said = f"{c.source or 'the prior finding'}, which found it {c.expected}"
    if o.kind == c.expected:
        return f" This agrees with {said}."
    if not o.decided:
        return f" This neither confirms nor contradicts {said}."
    return f" This disagrees with {said}."


def seed_caveat(outcomes: Sequence[Outcome]) -> str:
    """Once per report: with too few seeds the permutation test, which must agree for a verdict of better or
    worse, cannot be significant whatever the data. Empty when every test has enough seeds."""
    short = [o for o in outcomes if 2 <= o.n < o.min_seeds]
    if not short:
        return ""
    n, least = max(o.n for o in short), short[0].min_seeds
    who = ("no declared contrast can be called better or worse here" if len(short) == len(outcomes) else
           f"{len(short)} of the {len(outcomes)} declared tests (those with fewer than {least} seeds) cannot be called "
           "better or worse")
    return (f"**Seeds**: with {'at most ' if len({o.n for o in short}) > 1 else ''}{n} seeds the exact sign-flip "
            f"permutation test cannot give p below 2/2^{n} = {fmt(2 / 2**n)}, so it cannot reach {ALPHA}: "
            f"{who}, whatever the data, since both tests must agree. That takes at least {least} seeds.")


def margin_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """Each test's equivalence margin as resolved, with how it was set."""
    return [f"- **{title(o)}**" + (f" ({o.comparison.title})" if o.comparison.name else "") + ": " +
            (f"±{fmt(o.margin.value)}, {o.margin.how}." if o.margin.usable else f"none: {o.margin.how}.")
            for o in outcomes]


def seeds_sentence(o: Outcome) -> str:
    """How many seeds would detect a difference equal to the margin, at 80% power, from the observed spread."""
    head = f"**{title(o)}**: "
    if o.needed is None:
        return head + "the seeds needed cannot be estimated (fewer than 2 paired seeds, or no usable margin)."
    return (head + f"detecting a difference of {fmt(o.margin.value)} (the margin) with {POWER:.0%} power at alpha "
            f"{ALPHA} (two-sided paired t) takes about {o.needed} seeds, given the observed SD of the differences "
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


def two_axes(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per question asked on several axes: contrasts named "<question>: <axis>" (e.g. "x0 vs eps:
    quality", "x0 vs eps: copying") with the same arms, their verdicts side by side, from the tests below."""
    grouped: dict[tuple[str, tuple, tuple], list[Outcome]] = {}
    for o in outcomes:
        question, sep, axis = o.comparison.name.rpartition(": ")
        if sep and axis:
            grouped.setdefault((question, o.comparison.baseline[0], o.comparison.compare[0]), []).append(o)
    lines = []
    for (question, _, compared), group in grouped.items():
        if len({o.comparison.name for o in group}) < 2:  # one contrast's several tests are not axes
            continue
        parts = [f"{o.comparison.name.rpartition(': ')[2]}: {o.verdict} ({o.comparison.key})" for o in group]
        lines.append(f"- **{question}** ({compared} against the baseline, on two axes): " + "; ".join(parts) + ".")
    return lines + ([""] if lines else [])
