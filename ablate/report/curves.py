"""Does a verdict hold over training? The declared contrasts re-tested at every step of the headline's
learning curve (`eval.at_steps` with `eval.curve_samples`), and the sentence that says so.

At each step the same paired analysis runs on that step's values (Holm over the declared tests at that
step, margins from the real-data floor at the same sample count), and the verdicts are compared with the
final verdict at full count: "holds at every evaluated step (500, 1000, final)", "holds from step 1000
on", "reverses after step 1000" or "differs at step 500". Computed, never written by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ablate import contrasts
from ablate.contrasts import Outcome
from ablate.report.contrast_text import fmt, title
from ablate.report.data import ReportData
from ablate.store import REAL_DATA

OPPOSITE = {"better": "worse", "worse": "better", "higher": "lower", "lower": "higher"}
SHORT = {"disagree": "tests disagree"}
ByStep = list[tuple[int, list[Outcome]]]  # the declared tests at each curve step


def steps(data: ReportData) -> list[int]:
    """The training steps of the headline's learning curve, in order."""
    curve = data.curve
    return sorted({int(s) for s in curve[curve.sampler != REAL_DATA].step}) if len(curve) else []


def label(data: ReportData, step: int) -> str:
    """'500', or 'final' for the final weights' point (evaluated at the curve's count, like the others)."""
    return "final" if step in set(data.cells.step) else str(step)


def outcomes_by_step(data: ReportData) -> ByStep:
    """The declared tests at every curve step: the same expansion and order as the final ones."""
    curve, out = data.curve, []
    floor = curve[curve.sampler == REAL_DATA]
    directions = {c["metric"]: data.direction(c["metric"]) for c in data.contrasts}
    for step in steps(data):
        frame = pd.concat([curve[(curve.step == step) & (curve.sampler != REAL_DATA)], floor], ignore_index=True)
        out.append((step, contrasts.evaluate(frame, data.contrasts, directions, data.arms, [*data.samplers, REAL_DATA])))
    return out


def _settled(kind: str) -> str:
    """Two undecided verdicts are the same answer over training: neither shows a difference."""
    return "inconclusive" if kind == "disagree" else kind


def holds(final: str, along: Sequence[tuple[str, str]]) -> str:
    """Whether the final verdict (its kind) holds along the curve [(step label, kind), ...] in training order."""
    if not along:
        return ""
    seq = [(s, _settled(k)) for s, k in along]
    final = _settled(final)
    labels = [s for s, _ in seq]
    listing = " (" + ", ".join(f"{s}: {SHORT.get(k, k)}" for s, k in along) + ")"
    if all(k == final for _, k in seq):
        return f"holds at every evaluated step ({', '.join(labels)})"
    decided = [(i, k) for i, (_, k) in enumerate(seq) if k in OPPOSITE]
    if decided:
        first = decided[0][1]
        flip = next((i for i, k in decided if k == OPPOSITE[first]), None)
        if flip is not None:
            before = max(i for i, k in decided if k == first and i < flip)
            return f"reverses after {_step(labels[before])}{listing}"
    start = next(i for i in range(len(seq) + 1) if all(k == final for _, k in seq[i:]))
    if 0 < start < len(seq) - 1:
        return f"holds from {_step(labels[start])} on{listing}"
    return f"differs at {_steps([s for s, k in seq if k != final])}{listing}"


def _step(text: str) -> str:
    return "the final step" if text == "final" else f"step {text}"


def _steps(labels: list[str]) -> str:
    """'steps 500, 1000 and the final step'."""
    numbers = [s for s in labels if s != "final"]
    items = [*numbers, *(["the final step"] if "final" in labels else [])]
    if numbers:
        items[0] = f"{'steps' if len(numbers) > 1 else 'step'} {items[0]}"
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _along(data: ReportData, by_step: ByStep, i: int) -> list[tuple[str, str]]:
    return [(label(data, step), found[i].kind) for step, found in by_step if found[i].n >= 2]


def _setting(data: ReportData) -> str:
    """'kid at 200 samples, ancestral': what the curve evaluates."""
    curve = data.curve[data.curve.sampler != REAL_DATA]
    counts = ", ".join(f"{k} at {'/'.join(str(int(n)) for n in sorted(set(rows.num_samples.dropna())))} samples"
                       for k, rows in curve.groupby("key", sort=False))
    return f"{counts}, {', '.join(dict.fromkeys(curve.sampler))}"


def clauses(data: ReportData, final: list[Outcome], by_step: ByStep) -> list[str]:
    """Per declared test, the sentence that ends its conclusion ('' when the study has no headline curve)."""
    if not by_step:
        return ["" for _ in final]
    out = []
    for i, o in enumerate(final):
        said = holds(o.kind, _along(data, by_step, i))
        out.append(f" During training ({_setting(data)}): the verdict {said}." if said else
                   f" Not evaluated during training (the learning curve has {_setting(data)}).")
    return out


def section(data: ReportData, final: list[Outcome], by_step: ByStep) -> list[str]:
    """A table of every declared test's mean difference and verdict at each curve step, beside the final one."""
    if not by_step:
        return []
    head = [f"{'step ' if label(data, s) != 'final' else ''}{label(data, s)}" for s, _ in by_step]
    lines = ["### Across training", "",
             f"Each declared test repeated on the learning curve ({_setting(data)}; EMA weights) at each evaluated "
             "step, with Holm over the declared tests at that step (a `margin_floor_sd` margin from the real-data "
             "floor at the same count). Each entry: the mean difference (compared minus baseline) and the verdict. \"final\" is "
             "the final weights at the curve's count; the last column, the verdict at full count (above).", "",
             "| contrast | " + " | ".join(head) + " | full count | over training |",
             "|---|" + "---|" * (len(head) + 2)]
    for i, o in enumerate(final):
        cells = [f"{fmt(found[i].paired.mean)} ({SHORT.get(found[i].kind, found[i].kind)})" if found[i].n >= 2 else "–"
                 for _, found in by_step]
        said = holds(o.kind, _along(data, by_step, i)) or "not evaluated"
        lines.append(f"| {title(o)} | " + " | ".join(cells) + f" | {SHORT.get(o.kind, o.kind)} | {said} |")
    return lines + [""]
