"""A metric from a local plugin file reaches the report like a built-in one: the report reads the key
declarations the run recorded, and hard-codes no metric name."""

from __future__ import annotations

from ablate.cli import main
from studies import TINY, merged, plugin, run, write_study

METRIC = plugin('''
from ablate import KeySpec, Metric


class Radius(Metric):
    """Mean distance of the samples from the origin, against the reference's (a toy, declared metric)."""

    name = "radius_gap"
    keys = {"radius_gap": KeySpec("lower", "headline", nonnegative=True, description="|mean radius - data's|"),
            "radius": KeySpec(description="mean radius of the samples")}

    def evaluate(self, samples, real, ctx):
        r = samples.norm(dim=1).mean()
        return {"radius_gap": float((r - real.norm(dim=1).mean()).abs()), "radius": float(r)}
''', ablate_metrics=["Radius"])

# the exact oracle of gmm2d: nothing to train
LOCAL = merged(TINY, {"study": {"name": "local_metric", "seeds": [0, 1, 2]}, "data": {"n_train": 400, "n_test": 400},
                      "model": {"name": "gmm_oracle"}, "train": None, "eval": {"batch_size": 300},
                      "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 49}],
                      "metric": [{"name": "radius_gap", "num_samples": 300}]})


def test_a_local_metric_reaches_the_table_the_conclusion_and_a_plot(tmp_path):
    study = write_study(tmp_path, base=LOCAL, plugin_files={"radius.py": METRIC})
    runs, out = tmp_path / "runs", tmp_path / "reports"
    assert run(study, runs) == 0
    assert main(["report", str(study), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "local_metric" / "README.md").read_text()
    assert "| arm | sampler | NFE | samples | radius_gap |" in text  # the headline column
    assert "radius_gap: lower is better" in text
    conclusion = text.split("## Conclusion")[1].split("##")[0]
    # the exact oracle's full chain beats one jump to the data mean (radius ~0), whatever the seed
    assert "by radius_gap (lower is better) the best mean is **ancestral**" in conclusion
    assert "`radius`: mean radius of the samples" in text  # the declared diagnostic, described
    assert (out / "local_metric" / "radius_gap_vs_nfe.png").stat().st_size > 1000


def test_a_companion_study_shows_beside_the_arms(tmp_path):
    """`companions` puts another study's results (e.g. the exact oracle) in this study's report as arms
    '<label> + <arm>', and in its plot against a numeric axis."""
    oracle = merged(LOCAL, {"study": {"name": "oracle_ref"}, "grid": {"data.radius": [0.5, 1.0]},
                            "sampler": [{"name": "ancestral"}], "metric": [{"name": "gmm_fit", "num_samples": 300}]})
    trained = merged(oracle, {"study": {"name": "with_ref", "companions": {"ref": "oracle_ref"}}, "model": {"name": "mlp", "hidden": 8},
                              "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 30}})
    runs, out = tmp_path / "runs", tmp_path / "reports"
    for file, study in (("ref.toml", oracle), ("main.toml", trained)):
        assert run(write_study(tmp_path, file, base=study), runs) == 0
    assert main(["report", str(tmp_path / "main.toml"), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "with_ref" / "README.md").read_text()
    assert "| ref + radius=0.5 | ancestral |" in text and "| ref + radius=1.0 | ancestral |" in text
    assert (out / "with_ref" / "sw2_vs_radius.png").exists()  # both studies' lines against the axis
