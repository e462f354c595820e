"""A metric from a local plugin file reaches the report like a built-in one: the report reads the key
declarations the run recorded, and hard-codes no metric name."""

from __future__ import annotations

from ablate.cli import main

METRIC = '''
import torch
from ablate import KeySpec, Metric, hookimpl


class Radius(Metric):
    """Mean distance of the samples from the origin, against the reference's (a toy, declared metric)."""

    name = "radius_gap"
    keys = {"radius_gap": KeySpec("lower", "headline", nonnegative=True, description="|mean radius - data's|"),
            "radius": KeySpec(description="mean radius of the samples")}

    def evaluate(self, samples, real, ctx):
        r = samples.norm(dim=1).mean()
        return {"radius_gap": float((r - real.norm(dim=1).mean()).abs()), "radius": float(r)}


@hookimpl
def ablate_metrics():
    return [Radius]
'''

STUDY = """
plugins = ["radius.py"]

[study]
name = "local_metric"
seeds = [0, 1, 2]

[data]
name = "gmm2d"
n_train = 400
n_test = 400

[model]
name = "gmm_oracle"

[schedule]
name = "linear"
T = 50

[eval]
batch_size = 300
grid_samples = 0

[[sampler]]
name = "ancestral"

[[sampler]]
name = "one_step"
jump_at = 49

[[metric]]
name = "radius_gap"
num_samples = 300
"""


def test_a_local_metric_reaches_the_table_the_conclusion_and_a_plot(tmp_path):
    (tmp_path / "radius.py").write_text(METRIC)
    (tmp_path / "study.toml").write_text(STUDY)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    assert main(["run", str(tmp_path / "study.toml"), "--runs-dir", str(runs)]) == 0
    assert main(["report", str(tmp_path / "study.toml"), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "local_metric" / "README.md").read_text()
    assert "| arm | sampler | NFE | samples | radius_gap |" in text  # the headline column
    assert "radius_gap: lower is better" in text
    conclusion = text.split("## Conclusion")[1].split("##")[0]
    # the exact oracle's full chain beats one jump to the data mean (radius ~0), whatever the seed
    assert "by radius_gap (lower is better) the best mean is **ancestral**" in conclusion
    assert "`radius`: mean radius of the samples" in text  # the declared diagnostic, described
    assert (out / "local_metric" / "radius_gap_vs_nfe.png").stat().st_size > 1000
