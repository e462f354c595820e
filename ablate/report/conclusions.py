"""What the report concludes: the declared contrasts evaluated (with whether each holds over training and
along a numeric axis of the arms) and their section; without contrasts, an exploratory ranking that
claims nothing, and paired tests nobody declared, labelled as such."""

from __future__ import annotations

from ablate import contrasts
from ablate.report import contrast_text, curves
from ablate.report.contrast_text import fmt
from ablate.report.data import ALPHA, ReportData, split_axis
from ablate.store import REAL_DATA


def outcomes(data: ReportData) -> list[contrasts.Outcome]:
    if not data.contrasts:
        return []
    keys = {c["metric"] for c in data.contrasts} | {c["mechanism"]["key"] for c in data.contrasts if c.get("mechanism")}
    return contrasts.evaluate(data.sampled[data.sampled.key.isin(keys)], data.contrasts,
                              {k: data.direction(k) for k in keys}, data.arms, [*data.samplers, REAL_DATA])


def sentences(data: ReportData, outcomes: list[contrasts.Outcome], by_step: curves.ByStep) -> list[str]:
    """One generated sentence per declared contrast (with whether it holds over training, where the headline
    has a learning curve); without contrasts, an exploratory ranking with no claim."""
    if outcomes:
        return [contrast_text.conclusion(o) + clause for o, clause in
                zip(outcomes, curves.clauses(data, outcomes, by_step), strict=True)] + _across_axis(outcomes)
    key = data.primary
    if key is None:
        return []
    groups = [g for g in data.groups if g[1] != REAL_DATA and data.values(*g, key)]
    if not groups:
        return []
    direction = data.direction(key)
    stats = {g: data.interval(*g, key) for g in groups}
    floor = _floor_text(data, key)
    if direction == "none":
        return [f"No contrasts were declared and {key} declares no direction: see the tables (exploratory).{floor}"]
    best = min(groups, key=lambda g: stats[g].mean * (1 if direction == "lower" else -1))
    s = stats[best]
    return [f"No contrasts were declared, so nothing here is a claim. Exploratory: by {key} ({direction} is better) "
            f"the best mean is **{data.group_name(*best)}**, {fmt(s.mean)} (95% CI {fmt(s.low)} to {fmt(s.high)}, "
            f"n = {s.n}).{floor}"]


def _floor_text(data: ReportData, key: str) -> str:
    floor = data.floors[data.floors.key == key].value
    return f" Real data (held-out) scores {fmt(floor.mean())} on the same metric." if len(floor) else ""


def _across_axis(outcomes: list[contrasts.Outcome]) -> list[str]:
    """Contrasts repeated along a numeric axis of the arms (e.g. `D=8`): where the verdict changes."""
    families: dict[tuple[str, str, str, str], list[tuple[float, str, contrasts.Outcome]]] = {}
    for o in outcomes:
        (b_arm, b_sampler), (c_arm, c_sampler) = o.comparison.baseline, o.comparison.compare
        b_rest, b_axis = split_axis(b_arm)
        c_rest, c_axis = split_axis(c_arm)
        if b_axis is None or b_axis != c_axis or b_sampler != c_sampler:
            continue
        name, value = b_axis
        families.setdefault((b_rest, c_rest, name, o.comparison.key), []).append((value, b_sampler, o))
    out = []
    for (base, comp, name, key), rows in families.items():
        if len(rows) < 3:
            continue
        rows.sort(key=lambda r: r[0])
        verdicts = [(v, o.verdict) for v, _, o in rows]
        listing = "; ".join(f"{name} = {v:g}: {verdict}" for v, verdict in verdicts)
        where = f"no verdict of better or worse holds from some {name} to the largest"
        for side in ("better", "worse"):  # the verdict that holds from some value of the axis to its end
            from_on = next((v for i, (v, _) in enumerate(verdicts) if all(x == side for _, x in verdicts[i:])), None)
            if from_on is not None:
                before = [v for v, _ in verdicts if v < from_on]
                where = (f"{comp} is {side} than {base} at every {name} from {from_on:g} on" +
                         (f"; the change lies between {name} = {before[-1]:g} and {from_on:g}" if before else
                          " (at every value tested)"))
                break
        out.append(f"**{comp} vs {base} across {name}** ({key}): {listing}. {where}.")
    return out


def contrast_section(data: ReportData, outcomes: list[contrasts.Outcome], by_step: curves.ByStep) -> list[str]:
    lines = ["## Declared contrasts", "",
             "The questions the study declared before it ran. Each test uses the per-seed differences (compared minus "
             "baseline: arms and samplers at one seed share their random numbers): a paired t-test with its 95% "
             "interval, a seeded bootstrap interval and an exact sign-flip permutation test beside it. Holm's "
             f"correction runs over these {len(outcomes)} tests only, for the paired t and the permutation test "
             f"alike. \"Better\" or \"worse\" needs both to be significant (Holm p < {ALPHA}); when only one is, the "
             "verdict says they disagree. \"Equivalent within margin\" needs two one-sided tests (TOST) to pass with "
             "the margin; otherwise the test is \"inconclusive\", never \"no difference\".", ""]
    lines += contrast_text.contrast_table(outcomes) + ["", "### Margins", "",
                                                       "Each test's equivalence margin, as resolved from the results:", ""]
    lines += contrast_text.margin_lines(outcomes) + [""]
    open_ = [o for o in outcomes if not o.decided]
    if open_:
        lines += ["### Seeds needed", "", "For the tests not yet decided:", ""]
        lines += [f"- {contrast_text.seeds_sentence(o)}" for o in open_] + [""]
    lines += curves.section(data, outcomes, by_step)
    for key in dict.fromkeys(o.comparison.key for o in outcomes):
        groups = [g for g in data.groups if g[1] != REAL_DATA and data.values(*g, key)]  # every arm, not only the declared
        lines += [f"### Per-seed {key}", "", "Each seed's value, so any test above can be redone by hand.", ""]
        lines += contrast_text.per_seed_table(data.sampled, key, groups) + [""]
    return lines


def exploratory(data: ReportData, outcomes: list[contrasts.Outcome]) -> list[str]:
    """Paired tests nobody declared, labelled as such; with many groups only those against each arm's
    most expensive sampler and each sampler's first arm, so the table stays readable."""
    key = data.primary
    groups = [g for g in data.groups if g[1] != REAL_DATA]
    keep = None
    if len(groups) > 8:
        first = data.arms[0]
        top = {arm: next((g[1] for g in groups if g[0] == arm), None) for arm in data.arms}

        def keep(a: tuple[str, str], b: tuple[str, str]) -> bool:
            return (a[0] == b[0] and top.get(a[0]) in (a[1], b[1])) or (a[1] == b[1] and first in (a[0], b[0]))
    return contrast_text.exploratory_table(data.sampled, key, groups, outcomes, keep)
