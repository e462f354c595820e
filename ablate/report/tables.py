"""The report's result tables: did every arm train (final against trivial loss), the results per arm and
sampler with their intervals and the real-data floor, diagnostics, per-t curves and the raw weights."""

from __future__ import annotations

import math

from ablate.report import calibration
from ablate.report.contrast_text import fmt
from ablate.report.data import ReportData
from ablate.store import NO_SAMPLER, REAL_DATA


def health(data: ReportData) -> list[str]:
    """Did every arm train? Its final loss against the trivial (zero-output) predictor's, and how often the
    gradient norm was clipped."""
    cells = data.cells
    if "trivial_loss" not in cells or cells.trivial_loss.isna().all() or data.losses.empty:
        return []
    lines = ["### Did every arm train?", "",
             "Final loss: the mean of the last tenth of the recorded losses, averaged over seeds. Trivial loss: the "
             "same weighted loss for a network that outputs 0 (1.0 for epsilon + simple); an arm whose loss is not "
             "below it learnt nothing. Clipped: share of steps whose gradient norm exceeded `train.grad_clip`.", "",
             "| arm | final loss | trivial loss | final / trivial | clipped steps |", "|---|---|---|---|---|"]
    for arm in dict.fromkeys(cells.arm):  # the trained arms (not a companion study's)
        sub = cells[cells.arm == arm]
        finals = []
        for cell in sub.cell:
            curve = data.losses[data.losses.cell == cell].sort_values("step").loss
            if len(curve):
                finals.append(curve.tail(max(1, len(curve) // 10)).mean())
        final = sum(finals) / len(finals) if finals else math.nan
        trivial = sub.trivial_loss.mean()
        steps = sub.step.clip(lower=1)
        clipped = (sub.clipped_steps / steps).mean()
        lines.append(f"| {arm} | {fmt(final)} | {fmt(trivial)} | {fmt(final / trivial) if trivial else '–'} | "
                     f"{clipped:.1%} |")
    return lines + [""]


def results(data: ReportData) -> list[str]:
    nonneg = [k for k in data.keys + data.diagnostics if data.spec(k)["nonnegative"]]
    lines = ["## Results", "", "Each entry: mean over seeds with its 95% interval [low, high] and n = seeds. "
             "Intervals use the t distribution" + (f", except for the non-negative {', '.join(nonneg)}: a seeded "
             "percentile bootstrap of the mean, clipped at 0, so no interval goes below zero" if nonneg else "") + ". "
             "`real data (held-out)` is the floor: the same metric on held-out images that no model trained on, in place "
             "of samples: one half of the held-out split against the other (so at about half its count), or, for a "
             "metric that compares with the training split, held-out images against it."]
    directions = [f"{k}: {data.direction(k)} is better" for k in data.keys if data.direction(k) != "none"]
    if directions:
        lines[-1] += " Directions as the metrics declare them: " + "; ".join(directions) + "."
    lines += [""] + _table(data, data.keys)
    acc = data.sampled[data.sampled.key == "classifier_test_acc"]
    if len(acc):
        lines += ["", f"The classifier whose features FID and KID use reached {acc.value.iloc[0]:.1%} accuracy on the "
                  "held-out split. Classifier-feature scores are comparable within this report only, not with "
                  "published Inception scores, and only at equal sample counts."]
    if data.diagnostics:
        lines += ["", "### Diagnostics", ""]
        lines += [f"- `{k}`: {data.spec(k)['description'] or 'not described'}" for k in data.diagnostics] + [""]
        lines += _table(data, data.diagnostics)
    lines += calibration.units(data, data.keys + data.diagnostics)
    lines += _curves(data)
    raw = data.extra[(data.extra.weights == "raw") & data.extra.key.isin(data.keys)]
    if len(raw):
        lines += ["", "### Raw (non-EMA) final weights", "", "The same headline metrics for the final raw weights, "
                  "mean over seeds:", "", "| arm | sampler | " + " | ".join(data.keys) + " |",
                  "|---|---|" + "---|" * len(data.keys)]
        for (arm, sampler), rows in raw.groupby(["arm", "sampler"], sort=False):
            means = rows.groupby("key").value.mean()
            lines.append(f"| {arm} | {sampler} | " + " | ".join(fmt(means.get(k)) for k in data.keys) + " |")
    return lines + [""]


def _curves(data: ReportData) -> list[str]:
    """Per-t curves (declared role "curve", e.g. the x0 error at each t) as numbers beside their plot."""
    rows = data.results[(data.results.sampler == NO_SAMPLER)]
    rows = rows[rows.key.map(lambda k: data.spec(k)["role"] == "curve")]
    if rows.empty:
        return []
    lines = []
    for metric, sub in rows.groupby("metric", sort=False):
        keys = sorted(dict.fromkeys(sub.key), key=_natural)
        means = sub.groupby(["arm", "key"]).value.mean()
        lines += ["", f"### {metric.split('(')[0]} (mean over seeds)", "",
                  f"{data.spec(keys[0])['description'] or ''}", "",
                  "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        lines += [f"| {arm} | " + " | ".join(fmt(means.get((arm, k))) for k in keys) + " |"
                  for arm in data.arms if arm in set(sub.arm)]
    return lines


def _natural(key: str) -> tuple:
    """'t=10' after 't=9': numbers in keys compare as numbers."""
    head, _, tail = key.partition("=")
    try:
        return head, float(tail)
    except ValueError:
        return head, math.inf


def _table(data: ReportData, keys: list[str]) -> list[str]:
    """Rows per arm x sampler; the real-data floor once when it is the same for every arm."""
    lines = ["| arm | sampler | NFE | samples | " + " | ".join(keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    floors = [g for g in data.groups if g[1] == REAL_DATA]
    shared = len({tuple(data.values(*g, k)[0] if data.values(*g, k) else None for k in keys) for g in floors}) == 1
    seen_floor = False
    for arm, sampler in data.groups:
        if sampler == REAL_DATA and shared:
            if seen_floor:
                continue
            seen_floor, arm = True, "(every arm)"
        group = (data.arms[0] if arm == "(every arm)" else arm, sampler)
        cells = []
        for key in keys:
            s = data.interval(*group, key)
            cells.append(f"{fmt(s.mean)} [{fmt(s.low)}, {fmt(s.high)}] (n={s.n})" if s.n > 1 else fmt(s.mean))
        nfe = data.nfe(*group)
        count = data.sampled[(data.sampled.arm == group[0]) & (data.sampled.sampler == sampler)].num_samples.dropna()
        lines.append(f"| {arm} | {sampler} | {nfe if nfe is not None else '–'} | "
                     f"{int(count.iloc[0]) if len(count) else '–'} | " + " | ".join(cells) + " |")
    return lines
