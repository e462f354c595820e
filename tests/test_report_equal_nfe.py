"""Samplers compared at equal cost: two samplers at one NFE (DDIM's 11 steps and a 2nd-order Heun's 6,
from a local plugin file) among others still give a report and its plot against NFE (the plot once
sorted its points by their statistics on a tie and crashed)."""

from __future__ import annotations

from ablate.cli import main
from studies import DATA, ORACLE, merged, run, write_study

EQUAL_NFE = merged(ORACLE, {"plugins": [str(DATA / "heun_sampler.py")], "study": {"name": "equal_nfe", "seeds": [0, 1]},
                           "data": {"n_train": 300, "n_test": 300}, "schedule": {"T": 100}, "eval": {"batch_size": 200},
                           "sampler": [{"name": "ddim", "steps": 11}, {"name": "heun", "steps": 6}, {"name": "ddim", "steps": 21},
                                       {"name": "heun"}],
                           "metric": [{"name": "gmm_fit", "num_samples": 200}]})


def test_two_samplers_at_one_nfe_among_others_give_a_report_and_its_nfe_plot(tmp_path):
    study = write_study(tmp_path, base=EQUAL_NFE)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    assert run(study, runs) == 0
    assert main(["report", str(study), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "equal_nfe" / "README.md").read_text()
    for sampler, nfe in (("ddim(steps=11)", 11), ("heun(steps=6)", 11), ("ddim(steps=21)", 21), ("heun", 21)):
        assert f"| {sampler} | {nfe} |" in text
    assert (out / "equal_nfe" / "sw2_vs_nfe.png").stat().st_size > 1000  # gmm_fit's headline against NFE
