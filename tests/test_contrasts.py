"""Declared contrasts: spec validation, expansion, paired verdicts against scipy and hand values, the
generated text, and a bad `[[contrast]]` table failing through the CLI with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats as sps

from ablate import StudyError
from ablate.contrasts import ContrastSpec, evaluate, expand
from ablate.report.contrast_text import (
    conclusion,
    contrast_table,
    exploratory_table,
    per_seed_table,
    seed_caveat,
    seeds_sentence,
)
from ablate.store import Store
from ablate.study import load_study
from studies import study_text

ABLATE = Path(sys.executable).parent / "ablate"


def frame(values: dict[tuple[str, str], list[float]], key: str = "fid", seeds: list[int] | None = None) -> pd.DataFrame:
    rows = []
    for (arm, sampler), vs in values.items():
        for seed, v in zip(seeds or range(len(vs)), vs, strict=True):
            rows.append({"arm": arm, "sampler": sampler, "seed": seed, "key": key, "value": v})
    return pd.DataFrame(rows)


def spec(**kw):
    return {"metric": "fid", "baseline": "a", "compare": ["b"], "margin": 0.1, **kw}


def test_spec_rejects_unknown_keys_and_contradictions():
    with pytest.raises(ValidationError, match="extra"):
        ContrastSpec.model_validate(spec(baselin="a"))
    with pytest.raises(ValidationError, match="`arm` is for over"):
        ContrastSpec.model_validate(spec(arm="a"))
    with pytest.raises(ValidationError, match="`sampler` is for over"):
        ContrastSpec.model_validate(spec(over="sampler", sampler="s"))
    with pytest.raises(ValidationError, match="lists the baseline"):
        ContrastSpec.model_validate(spec(compare=["a", "b"]))
    with pytest.raises(ValidationError, match="greater than 0"):
        ContrastSpec.model_validate(spec(margin=0))
    with pytest.raises(ValidationError, match="exactly one of `margin`"):
        ContrastSpec.model_validate(spec(margin_floor_sd=2.0))
    with pytest.raises(ValidationError, match="relative to the baseline's value is not accepted"):
        ContrastSpec.model_validate(spec(relative=True))
    assert "relative" not in ContrastSpec.model_validate(spec(relative=False)).model_dump()  # false: absolute, as always


def test_expand_one_test_per_label_and_per_arm():
    tests = expand([spec(compare=["b", "c"])], ["a", "b", "c"], ["s1", "s2"])
    assert [(t.baseline, t.compare) for t in tests] == [(("a", "s1"), ("b", "s1")), (("a", "s1"), ("c", "s1"))]
    tests = expand([spec(baseline="s1", compare=["s2"], over="sampler")], ["a", "b"], ["s1", "s2"])
    assert [(t.baseline, t.compare) for t in tests] == [(("a", "s1"), ("a", "s2")), (("b", "s1"), ("b", "s2"))]
    tests = expand([spec(baseline="s1", compare=["s2"], over="sampler", arm="b")], ["a", "b"], ["s1", "s2"])
    assert [(t.baseline, t.compare) for t in tests] == [(("b", "s1"), ("b", "s2"))]


def test_identical_arms_are_equivalent_never_significant():
    rng = np.random.default_rng(0)
    same = (10 + rng.normal(0, 2, 5)).tolist()  # same training, same noise: the same value at every seed
    (o,) = evaluate(frame({("a", "s"): same, ("b", "s"): list(same)}), [spec()], {"fid": "lower"})
    assert not o.significant and o.p_holm == 1.0 and o.flip.p == 1.0
    assert o.verdict == "equivalent within margin"
    assert "Verdict: equivalent within margin." in conclusion(o)


def test_large_difference_is_significant_at_eight_seeds():
    rng = np.random.default_rng(1)
    base = 10 + rng.normal(0, 2, 8)  # seed-to-seed spread 2, shared by both arms
    worse = base + 3 + rng.normal(0, 0.3, 8)
    f = frame({("a", "s"): base.tolist(), ("b", "s"): worse.tolist()})
    (o,) = evaluate(f, [spec()], {"fid": "lower"})
    ref = sps.ttest_rel(worse, base)
    assert o.paired.p == pytest.approx(ref.pvalue, rel=1e-10) and o.p_holm == pytest.approx(ref.pvalue, rel=1e-10)
    assert o.significant and o.verdict == "worse" and o.flip.p == pytest.approx(2 / 256)
    assert evaluate(f, [spec()], {"fid": "higher"})[0].verdict == "better"
    assert evaluate(f, [spec()], {})[0].verdict == "higher"
    # unpaired, the shared seed spread hides it far more (Welch p is orders of magnitude larger)
    assert sps.ttest_ind(worse, base, equal_var=False).pvalue > 100 * ref.pvalue


def test_three_seeds_say_the_permutation_test_cannot_reach_005_once():
    f = frame({("a", "s"): [10.0, 11.0, 12.5], ("b", "s"): [12.0, 13.2, 14.4]})
    (o,) = evaluate(f, [spec()], {"fid": "lower"})
    assert o.flip.p == pytest.approx(0.25) and not o.flip.can_reach
    assert "2/2^3 = 0.25, so it cannot reach 0.05" in seed_caveat([o]) and "2/2^3" not in conclusion(o)
    assert "That takes at least 6 seeds." in seed_caveat([o])


def test_inconclusive_wording_with_an_absolute_margin():
    f = frame({("a", "s"): [10.0, 12.0, 11.0], ("b", "s"): [11.0, 11.0, 12.5]})
    (o,) = evaluate(f, [spec(margin=0.05)], {"fid": "lower"})
    assert o.margin.value == 0.05 and o.margin.how == "absolute, in the metric's units"
    assert o.verdict == "inconclusive at n = 3"
    text = "\n".join([*contrast_table([o]), conclusion(o), seeds_sentence(o), *exploratory_table(f, "fid")])
    assert "inconclusive at n = 3" in text and "indistinguishable" not in text


def test_pairs_on_seeds_present_in_both_and_holm_over_declared_only():
    f = pd.concat([frame({("a", "s"): [1.0, 2.0, 3.0, 4.0]}, seeds=[0, 1, 2, 3]),
                   frame({("b", "s"): [1.5, 2.9, 3.2]}, seeds=[1, 2, 3]),
                   frame({("c", "s"): [2.0, 2.5, 3.9, 4.8]}, seeds=[0, 1, 2, 3]),
                   frame({("d", "s"): [0.0, 0.0, 0.0, 0.0]}, seeds=[0, 1, 2, 3])])  # not declared: not in the family
    ob, oc = evaluate(f, [spec(compare=["b", "c"])], {"fid": "lower"})
    assert ob.seeds == (1, 2, 3) and ob.paired.mean == pytest.approx(((1.5 - 2) + (2.9 - 3) + (3.2 - 4)) / 3)
    pb = sps.ttest_rel([1.5, 2.9, 3.2], [2.0, 3.0, 4.0]).pvalue
    pc = sps.ttest_rel([2.0, 2.5, 3.9, 4.8], [1.0, 2.0, 3.0, 4.0]).pvalue
    lo, hi = sorted([pb, pc])
    holm = {lo: 2 * lo, hi: max(2 * lo, hi)}  # Holm by hand over the two declared tests
    assert ob.p_holm == pytest.approx(min(1, holm[pb])) and oc.p_holm == pytest.approx(min(1, holm[pc]))


def test_per_seed_and_exploratory_tables():
    f = frame({("a", "s"): [1.0, 2.0], ("b", "s"): [1.5, 2.25], ("a", "t"): [3.0, 4.0]})
    assert per_seed_table(f, "fid") == ["| arm | sampler | seed 0 | seed 1 |", "|---|---|---|---|",
                                        "| a | s | 1 | 2 |", "| b | s | 1.5 | 2.25 |", "| a | t | 3 | 4 |"]
    declared = evaluate(f, [spec()], {"fid": "lower"})
    lines = exploratory_table(f, "fid", declared=declared)
    assert lines[0].startswith("Exploratory")
    rows = [line for line in lines if line.startswith("| a ") or line.startswith("| b ")]
    # a/s-b/s is declared; b/s-a/t differs in both arm and sampler: only a/s-a/t is left
    assert len(rows) == 1 and rows[0].startswith("| a / s | a / t | 2 | 2 [2 to 2] |")


STUDY = study_text(study={"name": "contrasts", "seeds": [0, 1]}, schedule={"T": 100},
                   train={"steps": 10, "batch_size": 32, "warmup": 2, "log_every": 5, "checkpoint_every": 10},
                   grid={"target": [{"name": "epsilon"}, {"name": "x0"}]},
                   contrast=[{"metric": "nll", "baseline": "epsilon", "compare": ["x0"], "margin": 0.1}])  # edited below


def test_missing_arm_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace('baseline = "epsilon"', 'baseline = "eps"'))
    done = subprocess.run([str(ABLATE), "run", str(path), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "contrast[0].baseline: no arm 'eps' in this study; arms: epsilon, x0" in done.stderr
    assert "cells x" not in done.stdout  # rejected before anything was trained


@pytest.mark.parametrize("edit,message", [
    (('metric = "nll"', 'metric = "nl"'), "contrast[0].metric: no metric of this study outputs 'nl'; declared keys: sw2, nll"),
    (('compare = ["x0"]', 'compare = ["x0", "v"]'), "contrast[0].compare[1]: no arm 'v' in this study"),
    (("margin = 0.1", "margin = 0.1\nsampler = \"ddim\""), "contrast[0].sampler: no sampler 'ddim' in this study"),
    (("margin = 0.1", "margin = 0.1\nmargn = 1"), "contrast[0].margn: unknown key"),
])
def test_bad_contrasts_are_study_errors(tmp_path, edit, message):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace(*edit))
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert message in str(info.value)


def test_contrasts_are_resolved_and_recorded_in_the_run(tmp_path):
    from ablate.runner import run_study

    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    study = load_study(path)
    assert study.contrasts == [{"metric": "nll", "baseline": "epsilon", "compare": ["x0"], "over": "arm",
                                "sampler": "ancestral", "arm": None, "margin": 0.1, "margin_floor_sd": None, "name": "",
                                "expected": None, "source": "", "mechanism": None}]
    run_study(path, runs_dir=tmp_path / "runs", progress=False)
    store = Store(tmp_path / "runs" / "ablate.db")
    settings = json.loads(store.db.execute("SELECT settings FROM runs").fetchone()[0])
    assert settings["contrasts"] == study.contrasts
    (o,) = evaluate(store.results("contrasts"), settings["contrasts"], {"nll": "lower"})
    assert o.seeds == (0, 1) and o.comparison.compare == ("x0", "ancestral")
