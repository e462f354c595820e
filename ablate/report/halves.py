"""The report's "Generalisation (two halves)" section: the test of Kadkhodaie et al. (2024), from the rows
that `ablate run` stores for each pair of cells trained on the two halves of a training split (ablate.halves).

The verdict sentence is computed from two ratios: own / other (how much nearer the samples lie to their own
half's training images than to the other half's) and halves / unrelated (how far apart the two halves' models
draw from the same noise, against samples drawn from different noise). A model whose samples lie much nearer
its own half memorises, whatever the halves distance (a memoriser of a large training set draws similar copies
from both halves); one whose samples lie as near either half and whose halves draw nearly the same image
generalises, provided its samples lie about as near the training images as held-out images do (a model that
ignores its data, or draws noise, also agrees with itself).
"""

from __future__ import annotations

from ablate.halves import pair_arm
from ablate.report.contrast_text import fmt
from ablate.report.data import ReportData
from ablate.stats import mean_ci

MEMORISES = 0.5  # own / other below it
GENERALISES = (0.5, 0.8)  # halves / unrelated below the first and own / other above the second
UNLIKE_DATA = 1.25  # own-half distance above this multiple of the held-out images': samples unlike the data
COLUMNS = {"halves_distance": "halves distance", "unrelated_distance": "unrelated samples",
           "nn_own_half": "nn to own half", "nn_other_half": "nn to other half", "held_out_nn": "held-out nn"}


def section(data: ReportData) -> list[str]:
    """The section's markdown lines; none when the study trained no arm on both halves."""
    if data.halves.empty:
        return []
    frame = data.halves.assign(pair=[pair_arm(a) for a in data.halves.arm])
    lines = ["### Generalisation (two halves)", "",
             "The test of Kadkhodaie et al. (2024): each arm below was trained on two disjoint halves of the training "
             "split (`data.train_half`), at each seed with the same initialisation and random numbers, and both "
             "models drew samples from the same noise. *halves distance*: mean distance between sample i of one "
             "half's model and sample i of the other's; *unrelated samples*: the same between samples drawn from "
             "different noise; *nn to own / other half*: mean distance of a model's samples to the nearest training "
             "image of its own half and of the other half; *held-out nn*: that of held-out images to a half, the "
             "distance of a new image to the training set. Distances are RMS per value in data units ([-1, 1] for "
             "images), between images as saved; mean over seeds, 95% interval where there are several.", "",
             "| arm | sampler | seeds | " + " | ".join(COLUMNS.values()) + " |", "|---|---|---|" + "---|" * len(COLUMNS)]
    sentences = []
    for (arm, sampler), rows in frame.groupby(["pair", "sampler"], sort=False):
        per_seed = rows.groupby(["seed", "key"]).value.mean().unstack()  # both halves' cells of a seed averaged
        stats = {k: mean_ci(per_seed[k].dropna().tolist()) if k in per_seed else mean_ci([]) for k in COLUMNS}
        cells = [f"{fmt(s.mean)} [{fmt(s.low)}, {fmt(s.high)}]" if s.n > 1 else fmt(s.mean) for s in stats.values()]
        lines.append(f"| {arm} | {sampler} | {len(per_seed)} | " + " | ".join(cells) + " |")
        sentences.append(verdict(arm, sampler, {k: s.mean for k, s in stats.items()}))
    return lines + [""] + [f"- {s}" for s in sentences] + [""]


def verdict(arm: str, sampler: str, m: dict[str, float]) -> str:
    """One sentence from the means: memorises, generalises, or neither pattern clearly."""
    halves, unrelated, own, other = (m[k] for k in ("halves_distance", "unrelated_distance", "nn_own_half", "nn_other_half"))
    r = halves / unrelated if unrelated > 0 else float("nan")
    q = own / other if other > 0 else float("nan")
    where = f"**{arm}** ({sampler})"
    numbers = (f"the two halves' models draw images {fmt(halves)} apart from the same noise ({r:.0%} of the "
               f"{fmt(unrelated)} between unrelated samples); its samples lie {fmt(own)} from the nearest image of "
               f"their own half and {fmt(other)} from the other half's (ratio {q:.2f}); a held-out image lies "
               f"{fmt(m['held_out_nn'])} from the nearest image of a half")
    if q < MEMORISES:
        return f"{where} memorises: {numbers}. It draws copies of its own training images."
    if r < GENERALISES[0] and q > GENERALISES[1] and own > UNLIKE_DATA * m["held_out_nn"]:
        return (f"{where} draws nearly the same samples from both halves, but they are unlike the data: {numbers}. "
                "Its samples lie farther from the training images than held-out images do, so the agreement says "
                "little about generalisation (a model that ignores its data agrees with itself too).")
    if r < GENERALISES[0] and q > GENERALISES[1]:
        return f"{where} generalises: {numbers}. Both halves lead to nearly the same model."
    return (f"{where} shows neither pattern clearly: {numbers} (memorising: own / other < {MEMORISES}; "
            f"generalising: halves / unrelated < {GENERALISES[0]} with own / other > {GENERALISES[1]}).")

