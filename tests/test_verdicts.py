"""Verdicts need the paired t and the sign-flip permutation test to agree; margins are absolute or a multiple
of the real-data floor's spread, never relative; too few seeds are warned about at load; and the headline's
learning curve re-tests every declared contrast at each evaluated step."""

from __future__ import annotations

import math
import statistics
import warnings

import pandas as pd
import pytest
from scipy import stats as sps

from ablate.cli import main
from ablate.contrasts import evaluate
from ablate.report.curves import holds
from ablate.store import FINAL, REAL_DATA, Store
from ablate.study import load_study
from studies import run, write_study


def frame(groups: dict[tuple[str, str], list[float]], key: str = "kid") -> pd.DataFrame:
    return pd.DataFrame([{"arm": arm, "sampler": sampler, "seed": seed, "key": key, "value": v}
                         for (arm, sampler), values in groups.items() for seed, v in enumerate(values)])


def spec(**kw) -> dict:
    return {"metric": "kid", "baseline": "a", "compare": ["b"], "margin": 0.01, **kw}


def one(base: list[float], diffs: list[float], direction: str = "lower", **kw):
    (o,) = evaluate(frame({("a", "s"): base, ("b", "s"): [b + d for b, d in zip(base, diffs, strict=True)]}),
                    [spec(**kw)], {"kid": direction})
    return o


BASE8 = [10.0, 12.0, 9.0, 11.0, 13.0, 10.5, 12.5, 9.5]


def test_t_significant_but_permutation_cannot_be_is_inconclusive():
    """Five consistent differences: the paired t is far below 0.05, but 32 sign flips cannot give p < 0.0625."""
    o = one(BASE8[:5], [1.0, 1.1, 0.9, 1.05, 0.95])
    assert o.p_holm < 1e-4 and o.flip.p == pytest.approx(2 / 32)
    assert o.verdict == "inconclusive: the paired t and the permutation test disagree"


def test_permutation_significant_but_t_not_is_inconclusive():
    """Eight positive differences, one an outlier: every sign flip but the observed one and its mirror has a
    smaller |mean| (p = 2/256), while the outlier's spread keeps the t's p at 0.10."""
    diffs = [10.0, 1, 1, 1, 1, 1, 1, 1]
    o = one(BASE8, diffs)
    assert o.flip.p == pytest.approx(2 / 256)
    assert o.paired.p == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue) and o.paired.p > 0.05
    assert o.verdict == "inconclusive: the paired t and the permutation test disagree"


def test_both_significant_is_better_or_worse():
    o = one(BASE8, [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01])
    assert o.p_holm < 0.05 and o.flip.p == pytest.approx(2 / 256)
    assert o.verdict == "worse"  # kid went up, lower is better
    assert one(BASE8, [-x for x in [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01]]).verdict == "better"
    assert one(BASE8, [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01], "none").verdict == "higher"


def test_holm_adjusts_the_t_and_the_permutation_test_confirms_unadjusted():
    """Six seeds, two declared tests: each permutation p is 2/64 < 0.05 (unadjusted: it confirms the direction,
    Holm on the paired t controls the error over the declared tests), so both are decided."""
    base = BASE8[:6]
    f = frame({("a", "s"): base, ("b", "s"): [v + 1 + 0.01 * i for i, v in enumerate(base)],
               ("c", "s"): [v + 2 - 0.01 * i for i, v in enumerate(base)]})
    ob, oc = evaluate(f, [spec(compare=["b", "c"])], {"kid": "lower"})
    assert ob.flip.p == pytest.approx(2 / 64)
    assert ob.p_holm < 0.05 and oc.p_holm < 0.05 and ob.verdict == oc.verdict == "worse"


def _tost_by_hand(diffs: list[float], margin: float) -> float:
    n, mean, sd = len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    return max(sps.t.sf((mean + margin) / se, n - 1), sps.t.cdf((mean - margin) / se, n - 1))


DIFFS = [0.001, -0.002, 0.0015, 0.0005, -0.001, 0.002]


def test_tost_with_an_absolute_margin():
    o = one(BASE8[:6], DIFFS, margin=0.01)
    assert o.margin.value == 0.01
    assert o.equivalence.p == pytest.approx(_tost_by_hand(DIFFS, 0.01), rel=1e-9)
    assert o.equivalence.p < 0.05 and o.verdict == "equivalent within margin"


def test_tost_with_a_margin_of_twice_the_floor_sd():
    base, floor = BASE8[:6], [0.20, 0.23, 0.19, 0.22, 0.21, 0.24]
    f = pd.concat([frame({("a", "s"): base, ("b", "s"): [b + d for b, d in zip(base, DIFFS, strict=True)]}),
                   frame({("a", REAL_DATA): floor, ("b", REAL_DATA): [9.0] * 6})])  # b's floor is not the baseline's
    (o,) = evaluate(f, [spec(margin=None, margin_floor_sd=2.0)], {"kid": "lower"})
    margin = 2.0 * statistics.stdev(floor)  # 2 × 0.01871 = 0.03742
    assert o.margin.value == pytest.approx(margin, rel=1e-12)
    assert o.margin.how == "2 × the sd over 6 seeds of the real-data floor of kid (0.0187)"
    assert o.equivalence.p == pytest.approx(_tost_by_hand(DIFFS, margin), rel=1e-9)
    assert o.verdict == "equivalent within margin"


def test_a_floor_without_spread_gives_no_margin_and_says_why():
    base = BASE8[:6]
    f = pd.concat([frame({("a", "s"): base, ("b", "s"): [b + d for b, d in zip(base, DIFFS, strict=True)]}),
                   frame({("a", REAL_DATA): [0.2] * 6})])
    (o,) = evaluate(f, [spec(margin=None, margin_floor_sd=2.0)], {"kid": "lower"})
    assert math.isnan(o.margin.value) and "has the same value at all 6 seeds (sd 0)" in o.margin.how
    assert o.verdict == "inconclusive at n = 6"  # equivalence is never claimed without a margin


VERDICTS = {"study": {"name": "verdicts", "seeds": [0, 1, 2, 3, 4]},
            "train": {"steps": 30, "batch_size": 32, "warmup": 2, "log_every": 5, "checkpoint_every": 30},
            "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
            "contrast": [{"metric": "nll", "baseline": "epsilon", "compare": ["x0"], "margin": 0.5}]}


def test_a_relative_margin_is_one_error_naming_file_and_key(tmp_path, capsys):
    contrast = [{**VERDICTS["contrast"][0], "margin": 0.2, "relative": True}]
    path = write_study(tmp_path, **{**VERDICTS, "contrast": contrast})
    assert run(path) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and str(path) in err
    assert "contrast[0].relative: " in err and "not accepted" in err and "margin_floor_sd = 2.0" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seeds,warned", [(5, True), (6, False)])
def test_too_few_seeds_for_the_permutation_test_are_warned_at_load(tmp_path, seeds, warned):
    path = write_study(tmp_path, **{**VERDICTS, "study": {"name": "verdicts", "seeds": list(range(seeds))}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_study(path)
    found = [str(w.message) for w in caught if "study.seeds" in str(w.message)]
    if warned:
        assert found == [f"{path}: study.seeds: 5 seeds are too few for any verdict of better or worse: the exact "
                         "sign-flip permutation test, which must agree with the paired t, cannot give p below "
                         "2/2^5 = 0.0625, so it cannot reach 0.05; use at least 6 seeds"]
    else:
        assert found == []


@pytest.mark.parametrize("along,said", [
    ([("500", "better"), ("1000", "better"), ("final", "better")], "holds at every evaluated step (500, 1000, final)"),
    ([("500", "inconclusive"), ("1000", "better"), ("2000", "better"), ("final", "better")],
     "holds from step 1000 on (500: inconclusive, 1000: better, 2000: better, final: better)"),
    ([("500", "better"), ("1000", "better"), ("2000", "worse"), ("final", "worse")],
     "reverses after step 1000 (500: better, 1000: better, 2000: worse, final: worse)"),
    ([("500", "better"), ("1000", "disagree"), ("final", "better")],
     "differs at step 1000 (500: better, 1000: tests disagree, final: better)"),
    ([("500", "disagree"), ("final", "inconclusive")], "holds at every evaluated step (500, final)"),
])
def test_whether_a_verdict_holds_over_training(along, said):
    final = "inconclusive" if along[-1][1] == "inconclusive" else along[-1][1]
    assert holds(final, along) == said
    assert holds("equivalent", [("500", "better"), ("final", "better")]) == \
        "differs at step 500 and the final step (500: better, final: better)"


# three learning rates of x0 at three seeds, the headline (gmm_fit's sw2) evaluated at 50 samples at steps 10 and 20
CURVE = {**VERDICTS, "study": {"name": "verdicts", "seeds": [0, 1, 2]},
         "eval": {"at_steps": [10, 20], "curve_samples": 50, "curve_sampler": "ancestral"},
         "grid": {"train.lr": [0.003, 0.004, 0.005], "target": [{"name": "x0"}]},
         "contrast": [{"metric": "sw2", "baseline": "lr=0.003 + x0", "compare": ["lr=0.004 + x0", "lr=0.005 + x0"],
                       "margin": 1e6}],
         "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 49}],
         "metric": [{"name": "gmm_fit", "num_samples": 100},
                    {"name": "x0_error_by_t", "num_samples": 50, "timesteps": [0, 49]}]}


def test_the_headline_learning_curve_end_to_end(tmp_path):
    """at_steps + curve_samples: the headline at 50 samples at steps 10 and 20 and for the final weights (step
    30), under the curve sampler alone, with a floor at the same count; the report plots it and says, per
    contrast, whether the verdict holds at every step (a margin of 1e6 nats: equivalent everywhere)."""
    study, runs, out = write_study(tmp_path, **CURVE), tmp_path / "runs", tmp_path / "reports"
    for command in (["run", str(study)], ["report", str(study), "--out", str(out)]):
        assert main([*command, "--runs-dir", str(runs)]) == 0
    store = Store(runs / "ablate.db")
    try:
        rows = store.results("verdicts", final_only=False)
    finally:
        store.close()
    sw2 = rows[rows.key == "sw2"]
    curve = sw2[sw2.step != FINAL]
    assert set(zip(curve.sampler, curve.step, strict=True)) == {("ancestral", 10), ("ancestral", 20), ("ancestral", 30),
                                                   (REAL_DATA, 30)}
    final = sw2[sw2.step == FINAL]
    assert set(curve.num_samples) == {50} and set(final[final.sampler != REAL_DATA].num_samples) == {100}
    assert set(final[final.sampler == REAL_DATA].num_samples) == {50}  # the floor: one half of the 100 held out against the other
    x0 = rows[rows.metric.str.startswith("x0_error_by_t")]
    assert set(x0.step) == {10, 20, FINAL}  # the cheap metric is not repeated for the final weights
    floor = final[final.sampler == REAL_DATA].pivot_table(index="seed", columns="arm", values="value")
    assert floor.nunique(axis=1).eq(1).all() and floor["lr=0.003 + x0"].nunique() == 3  # same per seed, new per seed

    text = (out / "verdicts" / "README.md").read_text()
    assert (out / "verdicts" / "learning_curves.png").stat().st_size > 1000
    assert "### Learning curves of the headline metric" in text
    assert (out / "verdicts" / "diagnostic_curves.png").exists()
    for compared in ("0.004", "0.005"):
        sentence = next(line for line in text.splitlines()
                        if line.startswith(f"- **lr={compared} + x0 vs lr=0.003 + x0 (sw2, ancestral)**"))
        assert sentence.endswith("During training (sw2 at 50 samples, ancestral): the verdict holds at every evaluated "
                                 "step (10, 20, final).")
        assert "Verdict: equivalent within margin" in sentence
    assert text.count("**Seeds**: with 3 seeds") == 1 and "2/2^3 = 0.25" in text  # the caveat, once
    assert "### Across training" in text and "### Seeds needed" not in text  # every test is decided


def test_a_declared_mechanism_is_read_from_the_diagnostic_means():
    """The sentence follows the declared thresholds on the compared group's mean of the diagnostic key."""
    from ablate.report.contrast_text import conclusion

    base = BASE8[:6]
    rows = {("a", "s"): base, ("b", "s"): [v + 1 + 0.01 * i for i, v in enumerate(base)]}
    f = frame(rows)
    spread = frame({("a", "s"): [1.0] * 6, ("b", "s"): [0.01 * (i + 1) for i in range(6)]}, key="spread_ratio")
    mech = {"key": "spread_ratio", "below": 0.8, "below_means": "regression to the mean", "above": 1.2,
            "above_means": "error amplification"}
    (o,) = evaluate(pd.concat([f, spread]), [spec(compare=["b"], mechanism=mech)], {"kid": "lower"})
    assert o.diagnostic == pytest.approx((1.0, 0.035))
    assert "b has spread_ratio 0.035 against 1 for a (0.035 times): regression to the mean." in conclusion(o)
    wide = spread.assign(value=[1.0] * 6 + [1.5] * 6)
    (o,) = evaluate(pd.concat([f, wide]), [spec(compare=["b"], mechanism=mech)], {"kid": "lower"})
    assert conclusion(o).endswith("error amplification.")


def test_a_question_asked_on_two_axes_gets_one_line_with_both_verdicts():
    from ablate.report.contrast_text import two_axes

    base = BASE8[:6]
    kid = frame({("a", "s"): base, ("b", "s"): [v - 1 - 0.01 * i for i, v in enumerate(base)]})
    copies = frame({("a", "s"): [0.01] * 6, ("b", "s"): [0.2 + 0.01 * i for i in range(6)]}, key="close_copies")
    outcomes = evaluate(pd.concat([kid, copies]), [spec(name="x0 vs eps: quality"),
                                                   spec(name="x0 vs eps: copying", metric="close_copies")],
                        {"kid": "lower", "close_copies": "lower"})
    (line, blank) = two_axes(outcomes)
    assert line == "- **x0 vs eps** (b against the baseline, on two axes): quality: better (kid); copying: worse (close_copies)."
    assert blank == "" and two_axes(outcomes[:1]) == []


def test_one_contrast_with_two_compared_labels_is_not_two_axes():
    from ablate.report.contrast_text import two_axes

    base = BASE8[:6]
    f = frame({("a", "s"): base, ("b", "s"): [v + 1 for v in base], ("c", "s"): [v + 2 for v in base]})
    outcomes = evaluate(f, [spec(name="10 evaluations: jump and strided vs DDIM", compare=["b", "c"])], {"kid": "lower"})
    assert two_axes(outcomes) == []
