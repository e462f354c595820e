"""The report's calibration: what one unit of each key is, and the ladder every number is placed on.

The ladder (ablate.ladder) scores known answers with every sample metric at the same sample count:
held-out images (the floor), copies of k training images, noisy, blurred and class-mean images. A
reader places an arm between two rungs instead of reading a bare number; the rungs are never arms.
"""

from __future__ import annotations

import pandas as pd

from ablate.report.contrast_text import fmt
from ablate.report.data import ReportData
from ablate.store import LADDER, REAL_DATA

EVERY_ARM = "(every arm)"


def units(data: ReportData, keys: list[str]) -> list[str]:
    """A 'Units' list: what one unit of each shown key is, as its metric declares it."""
    declared = [(k, data.spec(k).get("unit", "")) for k in keys]
    lines = [f"- `{k}`: {unit}" for k, unit in declared if unit]
    return ["", "### Units", "", *lines] if lines else []


def ladder(data: ReportData) -> list[str]:
    """Per metric, the floor and each rung (mean over seeds with its 95% interval), beside the results."""
    if data.ladder.empty:
        return []
    rows = pd.concat([data.floors, data.ladder])
    keys = [k for k in data.keys + data.diagnostics if k in set(data.ladder.key)]
    lines = ["## Calibration ladder", "",
             "Real images scored like samples, by the same metric at the same sample count against the same reference, "
             "so each arm above can be placed between known answers: `real data (held-out)`, the floor (one half of the "
             "held-out split against the other, drawn per seed: no model trained on either); k distinct training images, "
             "each repeated (`copies`: a model that memorised k images); training images with Gaussian pixel noise of "
             "that sd, clamped and quantised; blurred by a Gaussian of sd 1 pixel; and each replaced by the mean image "
             "of its class. Rungs are drawn from the training split per seed. The floor runs at about half the held-out "
             "count: KID is unbiased in the counts, FID is biased upward at small counts, so the FID floor sits higher "
             "than it would at the samples' count.", ""]
    for metric in dict.fromkeys(data.ladder.metric):
        shown = [k for k in keys if k in set(data.ladder[data.ladder.metric == metric].key)]
        if not shown:
            continue
        lines += [f"### {metric}", "", "| arm | rung | samples | " + " | ".join(shown) + " |",
                  "|---|---|---|" + "---|" * len(shown)]
        sub = rows[rows.metric == metric]
        for arm, first in _arms(data, sub):
            for rung in (REAL_DATA, *LADDER):
                own = sub[(sub.sampler == rung) & (sub.arm == first)]
                if own.empty:
                    continue
                cells = []
                for key in shown:
                    s = data.interval_of(key, own[own.key == key].sort_values("seed").value.tolist())
                    cells.append(f"{fmt(s.mean)} [{fmt(s.low)}, {fmt(s.high)}] (n={s.n})" if s.n > 1 else fmt(s.mean))
                lines.append(f"| {arm} | {rung} | {int(own.num_samples.iloc[0])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _arms(data: ReportData, rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, an arm of the group): one row group per set of arms that share their rungs (same data and seeds),
    labelled by the axis values its arms have in common and the others lack (e.g. `train_half=a`)."""
    arms = [a for a in data.arms if a in set(rows.arm)]
    groups: dict[tuple, list[str]] = {}
    for a in arms:
        groups.setdefault(tuple(rows[rows.arm == a].sort_values(["sampler", "key", "seed"]).value.round(12)), []).append(a)
    if len(groups) == 1:
        return [(EVERY_ARM, arms[0])]
    everywhere = set.intersection(*(set(a.split(" + ")) for a in arms))
    out = []
    for members in groups.values():
        shared = [t for t in members[0].split(" + ") if t not in everywhere and all(t in m.split(" + ") for m in members)]
        label = members[0] if len(members) == 1 else f"{' + '.join(shared) or members[0]} ({len(members)} arms)"
        out.append((label, members[0]))
    return out
