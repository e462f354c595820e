"""Report statistics against hand-computed values, and `ablate report` regenerating the same tables."""

from __future__ import annotations

import math

import pytest
from scipy.stats import ttest_rel

from ablate.cli import main
from ablate.stats import holm, mean_ci, welch
from ablate.store import Store


def test_mean_ci_matches_hand_computation():
    s = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sample sd 1, t_{2, 0.975} = 4.302652729911275 (tables), half width 4.3027 / sqrt(3)
    assert s.n == 3 and s.mean == pytest.approx(2.0) and s.std == pytest.approx(1.0)
    assert s.half_width == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.half_width)


def test_welch_matches_hand_computation():
    from scipy.stats import t as t_dist

    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    va, vb = 1.0, 5 / 3  # sample variances by hand
    se2 = va / 3 + vb / 4  # 0.75
    t = (2.0 - 5.5) / math.sqrt(se2)
    df = se2**2 / ((va / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)  # Welch-Satterthwaite: 4.959...
    stat, p = welch(a, b)
    assert stat == pytest.approx(t) and stat == pytest.approx(-4.041451884327381)
    assert p == pytest.approx(2 * t_dist.sf(abs(t), df), rel=1e-9)
    assert math.isnan(welch([1.0], b)[1])


def test_holm_matches_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.5, float("nan")])
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1])


FIDS = {"epsilon": [10.0, 11.0, 12.0], "x0": [20.0, 22.0, 25.0]}
FID_KEYS = {"fid": {"fid": {"direction": "lower", "role": "headline", "nonnegative": True, "description": "d"}}}


def _fake_store(db, contrasts: list | None = None) -> None:
    store = Store(db)
    run = store.start_run("demo", "quick", "/nonexistent/demo.toml", {"cpu": "test cpu", "device": "cpu"},
                          {"sampler/ancestral": "built-in"}, {"metric_keys": FID_KEYS, "contrasts": contrasts or []})
    for arm, values in FIDS.items():
        for seed, value in enumerate(values):
            key = f"{arm}{seed}"
            store.add_cell(run, key, {"target": {"name": arm}, "seed": seed}, arm, seed)
            store.update_cell(key, status="done", train_seconds=1.0, num_params=10)
            store.add_losses(key, [(10, 1.0), (20, 0.5)])
            store.add_metric(key, "ancestral", "fid", {"fid": value}, 100, 1000, 2.0)
            store.add_metric(key, "real data (held-out)", "fid", {"fid": 3.0}, 100, 0, 0.1)
            store.add_metric(key, "-", "x0_error_by_t", {"t=0": 0.01, "t=999": 1.0}, 50, None, 0.1)
    store.finish_run(run)
    store.close()


def test_report_without_contrasts_is_exploratory(tmp_path):
    runs = tmp_path / "runs"
    _fake_store(runs / "ablate.db")
    out = tmp_path / "reports"
    assert main(["report", "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "demo" / "README.md").read_text()
    # fid is non-negative: a bootstrap interval of the mean, inside [min, max] of the seeds
    row = next(line for line in text.splitlines() if line.startswith("| epsilon | ancestral | 1000 | 100 | 11 ["))
    low, high = (float(v) for v in row.split("[")[1].split("]")[0].split(", "))
    assert 10 <= low < 11 < high <= 12
    assert "| (every arm) | real data (held-out) | 0 | 100 | 3 [3, 3] (n=3) |" in text  # the floor, once
    assert "No contrasts were declared, so nothing here is a claim" in text and "**epsilon**" in text
    assert "real data (held-out) scores 3" in text.lower()
    # the exploratory table is paired on seeds: its p is scipy's ttest_rel
    p = ttest_rel(FIDS["x0"], FIDS["epsilon"]).pvalue
    assert "| epsilon / ancestral | x0 / ancestral | 3 |" in text and f"{p:.3f}" in text
    for png in ("fid_by_arm.png", "x0_error_by_t.png", "loss_curves.png"):
        assert (out / "demo" / png).stat().st_size > 1000
    assert "[demo](demo/README.md)" in (out / "README.md").read_text()
    assert main(["report", "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert (out / "demo" / "README.md").read_text() == text  # same store, same report: byte-identical


def test_report_answers_declared_contrasts(tmp_path):
    """Three seeds: the paired t is significant but the permutation test cannot be (2/2^3 = 0.25), so the tests
    disagree and nothing is called worse; the caveat is said once. The contrast is as an older run recorded it,
    with a relative margin: the report tests no equivalence for it and says why."""
    contrast = {"metric": "fid", "baseline": "epsilon", "compare": ["x0"], "over": "arm", "sampler": "ancestral",
                "arm": None, "margin": 0.1, "relative": True, "name": "x0 vs eps", "expected": "worse",
                "source": "Ho et al. (2020)"}
    _fake_store(tmp_path / "runs" / "ablate.db", [contrast])
    out = tmp_path / "reports"
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "demo" / "README.md").read_text()
    p = ttest_rel(FIDS["x0"], FIDS["epsilon"]).pvalue
    assert p < 0.05
    conclusion = text.split("## Conclusion")[1].split("##")[0]
    assert "**x0 vs eps**: x0 has fid higher than epsilon by 11.3" in conclusion
    assert f"paired t p = {p:.3f}" in conclusion and "permutation p = 0.250" in conclusion
    assert "Verdict: inconclusive: the paired t and the permutation test disagree; equivalence cannot be tested: " \
           "the margin was declared as 0.1 × the baseline's mean" in conclusion
    assert "This neither confirms nor contradicts Ho et al. (2020), which found it worse." in conclusion
    assert text.count("2/2^3 = 0.25") == 1 and "That takes at least 6 seeds." in conclusion  # the caveat, once
    assert "## Declared contrasts" in text and "### Per-seed fid" in text and "### Seeds needed" in text
    assert "| epsilon | ancestral | 10 | 11 | 12 |" in text and "| x0 | ancestral | 20 | 22 | 25 |" in text


def test_report_without_store_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--runs-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no results store" in err and "Traceback" not in err


def test_merge_copies_runs_once(tmp_path):
    """`ablate merge` brings a GPU machine's store home; merging twice adds nothing."""
    _fake_store(tmp_path / "gpu" / "ablate.db")
    (tmp_path / "gpu" / "epsilon0").mkdir()
    (tmp_path / "gpu" / "epsilon0" / "samples-x.pt").write_bytes(b"x")
    assert main(["merge", str(tmp_path / "gpu"), "--runs-dir", str(tmp_path / "home")]) == 0
    assert main(["merge", str(tmp_path / "gpu"), "--runs-dir", str(tmp_path / "home")]) == 0
    store = Store(tmp_path / "home" / "ablate.db")
    try:
        assert store.frame("SELECT COUNT(*) AS n FROM runs").n[0] == 1
        assert store.frame("SELECT COUNT(*) AS n FROM metrics").n[0] == 6 * 4  # fid, its floor, two x0 keys per cell
        assert len(store.results("demo")) == 24
    finally:
        store.close()
    assert (tmp_path / "home" / "epsilon0" / "samples-x.pt").read_bytes() == b"x"
