"""data.train_half and the generalisation test of Kadkhodaie et al. (2024): two disjoint halves of a training
split, and the samples two models trained on them draw from the same noise.

The pipeline test runs one tiny study (seconds): the empirical oracle (a perfect memoriser) on digits, the
GMM oracle (the same function whatever the data) on gmm2d, and an MLP trained on a dataset whose training
images are all the same image, so that its two halves hold the same data: models trained at one seed with
common random numbers must then be identical, and so must their samples."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
import torch

import ablate
from ablate import Data, DataSpec
from ablate.cli import main
from ablate.datatypes import half_indices
from ablate.evaluate import as_saved
from ablate.halves import HALVES, SAMPLES, nearest, pair_arm, samples_path
from ablate.interfaces import Dataset
from ablate.report import write_reports
from ablate.study import load_study
from studies import TINY, merged, plugin, write_study


def rows(x: torch.Tensor, y: torch.Tensor | None = None) -> Counter:
    labels = y.tolist() if y is not None else [None] * len(x)
    return Counter((r.numpy().tobytes(), label) for r, label in zip(x.flatten(1), labels, strict=True))


@pytest.mark.parametrize("name", ["digits", "gmm2d"])
def test_halves_are_disjoint_complete_stable_and_keep_the_held_out_split(registry, name):
    whole = registry.create("dataset", name).splits()
    a, b = (registry.create("dataset", name, {"train_half": h}).splits() for h in "ab")
    n = whole.train.shape[0]
    ia, ib = half_indices(n, "a"), half_indices(n, "b")
    assert not set(ia.tolist()) & set(ib.tolist()) and sorted(ia.tolist() + ib.tolist()) == list(range(n))
    assert (len(ia), len(ib)) == (n // 2, n - n // 2)
    assert torch.equal(a.train, whole.train[ia]) and torch.equal(b.train, whole.train[ib])
    assert torch.equal(a.train_labels, whole.train_labels[ia]) and torch.equal(b.train_labels, whole.train_labels[ib])
    assert rows(a.train, a.train_labels) + rows(b.train, b.train_labels) == rows(whole.train, whole.train_labels)
    for half in (a, b):
        assert torch.equal(half.test, whole.test) and torch.equal(half.test_labels, whole.test_labels)
        assert half.spec.train_split is half.train
    again = registry.create("dataset", name, {"train_half": "a"}).splits()
    assert torch.equal(again.train, a.train) and torch.equal(again.train_labels, a.train_labels)


def test_a_dataset_without_params_of_its_own_gets_train_half():
    class Counting(Dataset):
        name = "counting"

        def load(self) -> Data:
            return Data(torch.arange(7.0)[:, None], torch.zeros(1, 1), DataSpec(self.name, (1,)))

    a, b = (Counting(Counting.Params(train_half=h)).splits() for h in "ab")
    assert sorted(a.train.flatten().tolist() + b.train.flatten().tolist()) == list(range(7))
    assert a.train.shape[0] == 3 and Counting().splits().train.shape[0] == 7


def test_pair_arm_drops_the_train_half_part():
    assert pair_arm("x0 + train_half=a") == "x0"
    assert pair_arm("train_half=b + digits + mlp") == "digits + mlp"
    assert pair_arm("digits(train_half=a)") == "digits"
    assert pair_arm("digits(seed=1, train_half=b) + x0") == "digits(seed=1) + x0"
    assert pair_arm("digits(train_half=a, seed=1)") == "digits(seed=1)"
    assert pair_arm("train_half=a") == "default"


CONSTANT = plugin('''
import torch
from ablate import Data, Dataset, DataSpec

class Constant(Dataset):
    """48 copies of one 2-D point, and a held-out split around it: both halves hold the same data."""
    name = "constant"
    def load(self):
        gen = torch.Generator().manual_seed(0)
        return Data(torch.tensor([[0.4, -0.3]]).repeat(48, 1), torch.randn(16, 2, generator=gen) * 0.1,
                    DataSpec(self.name, (2,)))
''', ablate_datasets=["Constant"])

HALVES_STUDY = merged(TINY, {"study": {"name": "halves_test"}, "data": {"name": "digits"}, "model": {"name": "empirical_oracle"},
                              "train": {"warmup": None, "device": "cpu"}, "eval": {"batch_size": 64, "grid_samples": 8},
                              "grid": {"data.train_half": ["a", "b"]},
                              "arm": [{"data": {"name": "digits"}, "model": {"name": "empirical_oracle"}},
                                      {"data": {"name": "gmm2d", "n_train": 200, "n_test": 100}, "model": {"name": "gmm_oracle"}},
                                      {"data": {"name": "constant"}, "model": {"name": "mlp", "hidden": 16, "depth": 1}}],
                              "metric": [{"name": "nearest_neighbour", "num_samples": 64}]})

ARMS = {"digits": "digits + empirical_oracle", "gmm2d": "gmm2d(n_train=200, n_test=100) + gmm_oracle",
        "constant": "constant + mlp(hidden=16, depth=1)"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The study run once (local executor, in process), its report written."""
    root = tmp_path_factory.mktemp("halves")
    write_study(root, base=HALVES_STUDY, plugin_files={"constant.py": CONSTANT})
    ablate.run_study(root / "study.toml", runs_dir=root / "runs", progress=False)
    write_reports([str(root / "study.toml")], runs_dir=root / "runs", out_dir=root / "reports")
    study = load_study(root / "study.toml")
    return root, study


def values(runs, study) -> dict[tuple[str, str, str], float]:
    """(pair arm, half, key) -> value of the generalisation rows."""
    db = sqlite3.connect(runs / "ablate.db")
    found = {}
    for cell in study.cells:
        for key, value in db.execute("SELECT key, value FROM metrics WHERE cell=? AND metric=? AND sampler='ancestral'",
                                     (cell.key, HALVES)):
            found[(pair_arm(cell.arm), cell.config["data"]["train_half"], key)] = value
    db.close()
    return found


def test_the_empirical_oracle_memorises(run):
    root, study = run
    v = values(root / "runs", study)
    arm = ARMS["digits"]
    cells = {c.config["data"]["train_half"]: c for c in study.cells if pair_arm(c.arm) == arm}
    samples = {h: torch.load(samples_path(root / "runs" / c.key, "ancestral"), weights_only=True)["samples"] for h, c in cells.items()}
    digits = {h: ablate.load_registry().create("dataset", "digits", {"train_half": h}).splits() for h in "ab"}
    digits = {h: as_saved(d.train, d.spec) for h, d in digits.items()}  # what the samples are compared with
    for h, other in (("a", "b"), ("b", "a")):
        assert samples[h].shape == (SAMPLES, 1, 8, 8)
        own = nearest(samples[h], digits[h])
        assert (own < 1e-9).double().mean() > 0.95  # copies of its own half's images, as saved
        assert v[(arm, h, "nn_own_half")] == pytest.approx(float(own.mean()))
        assert v[(arm, h, "nn_other_half")] == pytest.approx(float(nearest(samples[h], digits[other]).mean()))
        assert v[(arm, h, "nn_other_half")] > 0.15 > 50 * v[(arm, h, "nn_own_half")]
    assert v[(arm, "a", "halves_distance")] == v[(arm, "b", "halves_distance")] > 0.3
    assert v[(arm, "a", "halves_distance")] > 0.4 * v[(arm, "a", "unrelated_distance")]


def test_the_gmm_oracle_does_not_depend_on_the_data(run):
    root, study = run
    v = values(root / "runs", study)
    arm = ARMS["gmm2d"]
    assert v[(arm, "a", "halves_distance")] == 0.0 < v[(arm, "a", "unrelated_distance")]
    own = (v[(arm, "a", "nn_own_half")] + v[(arm, "b", "nn_own_half")]) / 2
    other = (v[(arm, "a", "nn_other_half")] + v[(arm, "b", "nn_other_half")]) / 2
    assert own == pytest.approx(other, rel=1e-12)  # the same samples, measured against both halves


def test_halves_of_the_same_data_train_the_same_model(run):
    """Initialisation, data order and the t / eps draws depend on the seed alone: with the same data in both
    halves, training gives bit-identical weights, and sampling bit-identical samples."""
    root, study = run
    cells = [c for c in study.cells if pair_arm(c.arm) == ARMS["constant"]]
    weights = [torch.load(root / "runs" / c.key / "checkpoint.pt", weights_only=True)["ema"] for c in cells]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert values(root / "runs", study)[(ARMS["constant"], "a", "halves_distance")] == 0.0


def test_report_states_what_each_arm_does(run):
    root, _ = run
    text = (root / "reports" / "halves_test" / "README.md").read_text()
    section = text.split("### Generalisation (two halves)", 1)[1].split("\n## ", 1)[0]
    assert "| halves distance | unrelated samples | nn to own half | nn to other half | held-out nn |" in section
    assert f"**{ARMS['digits']}** (ancestral) memorises" in section
    assert f"**{ARMS['gmm2d']}** (ancestral) generalises" in section


def test_rerun_adds_nothing_and_merge_carries_the_rows(run, tmp_path, capsys):
    root, study = run
    before = values(root / "runs", study)
    lines = []
    ablate.run_study(root / "study.toml", runs_dir=root / "runs", progress=True)
    lines = capsys.readouterr().out
    assert "generalisation" not in lines and lines.count("already done") == len(study.cells)
    assert main(["merge", str(root / "runs"), "--runs-dir", str(tmp_path / "merged")]) == 0
    assert values(tmp_path / "merged", study) == before
    assert all(samples_path(tmp_path / "merged" / c.key, "ancestral").exists() for c in study.cells)


def test_workers_store_the_same_rows(run, tmp_path):
    """With cells in worker processes, the driver pairs them once both are merged back."""
    root, study = run
    workers = write_study(tmp_path, base=HALVES_STUDY, executor={"name": "local", "workers": 2})
    gmm = 'arm = [{ data = { name = "gmm2d", n_train = 200, n_test = 100 }, model = { name = "gmm_oracle" } }]'
    ablate.run_study(workers, overrides=[gmm], runs_dir=tmp_path / "runs", progress=False)
    expected = {k: v for k, v in values(root / "runs", study).items() if k[0] == ARMS["gmm2d"]}
    assert values(tmp_path / "runs", study) == expected and len(expected) == 10


@pytest.mark.parametrize(("means", "says"), [
    ((0.45, 0.77, 0.0, 0.28, 0.29), "memorises"),
    ((0.05, 0.70, 0.30, 0.31, 0.29), "generalises"),
    ((0.05, 0.60, 0.42, 0.42, 0.29), "unlike the data"),
    ((0.40, 0.70, 0.25, 0.30, 0.29), "neither pattern"),
])
def test_the_verdict_follows_the_ratios(means, says):
    from ablate.report.halves import verdict

    keys = ("halves_distance", "unrelated_distance", "nn_own_half", "nn_other_half", "held_out_nn")
    sentence = verdict("x0", "ancestral", dict(zip(keys, means, strict=True)))
    assert sentence.startswith("**x0** (ancestral)") and says in sentence
    assert sum(word in sentence for word in ("memorises", "generalises:", "unlike the data", "neither pattern")) == 1
