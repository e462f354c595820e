"""`ablate run --dry-run`: the plan of a run (cells new / cached / stale, evaluations pending, estimated
time) without training or writing anything: on an empty runs dir (a probe measures the rates; no runs
dir appears), after a real run (all cached, nothing pending, the runs dir byte for byte as it was) and
with one more seed (one new cell, its time from the rates the run measured)."""

from __future__ import annotations

import hashlib
import re

import pytest

from ablate.cli import main
from studies import TINY_EVAL, merged, plugin, run, write_study

DRY = merged(TINY_EVAL, {"study": {"name": "dry_tiny"}})
PENDING_PER_CELL = 4  # gmm_fit x (ancestral, ddim, the real-data floor) + the diagnostic x0_error_by_t


def files(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dry_run(capsys, study, runs, *extra) -> str:
    assert main(["run", str(study), "--dry-run", "--runs-dir", str(runs), *extra]) == 0
    return capsys.readouterr().out


def test_dry_run_plans_without_writing(tmp_path, capsys):
    study, runs = write_study(tmp_path, "dry.toml", base=DRY), tmp_path / "runs"

    out = dry_run(capsys, study, runs)
    assert not runs.exists()  # not even the folder
    assert "cells: 1 new" in out and "30 steps to train" in out
    assert f"evaluations pending: {PENDING_PER_CELL}" in out
    assert "probed: 20 steps" in out and "measured over" not in out
    assert f"metrics 0.0 s + {PENDING_PER_CELL} evaluations not measured yet" in out  # a probe scores nothing
    assert re.search(r"estimated time: [\d.]+ (s|min)", out)

    assert run(study, runs) == 0
    capsys.readouterr()
    before = files(runs)
    out = dry_run(capsys, study, runs)
    assert files(runs) == before  # the store and its side files untouched
    assert "cells: 1 cached" in out and "evaluations pending: 0" in out and "probed" not in out

    out = dry_run(capsys, study, runs, "--set", "study.seeds=[0, 1]")
    assert files(runs) == before
    assert "cells: 1 new, 1 cached" in out and f"evaluations pending: {PENDING_PER_CELL}" in out
    assert re.search(r"new +default seed 1 \(\w+\): 30 steps to train", out)
    assert "s per training step (measured over 1 cells)" in out and "probed" not in out
    assert re.search(r"s per sample per network evaluation \(measured over \d+ evaluations\)", out)
    assert "not measured yet" not in out  # the metrics' own seconds, from the run's floor and diagnostic


def test_dry_run_counts_what_a_changed_study_adds(tmp_path, capsys):
    """A metric added after the run is pending on the cached cell; more steps make the cell resume."""
    study, runs = write_study(tmp_path, "dry.toml", base=DRY), tmp_path / "runs"
    assert main(["run", str(study), "--runs-dir", str(runs), "--set", "metric=[]"]) == 0
    capsys.readouterr()
    out = dry_run(capsys, study, runs)
    assert "cells: 1 cached" in out and f"evaluations pending: {PENDING_PER_CELL}" in out
    out = dry_run(capsys, study, runs, "--set", "train.steps=50")
    assert "cells: 1 new" in out  # steps are part of the cell: another cell, not a resumed one


@pytest.mark.parametrize("bad", ["train.steps=0", "model.name='mpl'"])
def test_dry_run_validates_like_a_run(tmp_path, capsys, bad):
    study = write_study(tmp_path, "dry.toml", base=DRY)
    assert main(["run", str(study), "--dry-run", "--runs-dir", str(tmp_path / "runs"), "--set", bad]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "runs").exists()


FLAT = plugin('''
import torch
from ablate import Weighting


class Flat(Weighting):
    """w(t) = 1."""

    name = "flat"

    def weights(self, diffusion, target, t):
        return torch.ones(t.shape, dtype=torch.float64)
''', ablate_weightings=["Flat"])


def test_dry_run_names_stale_cells_and_leaves_them(tmp_path, capsys):
    """A cell trained by a local plugin file that has changed since is stale: the dry run says so and
    what a run would do, and deletes nothing (the run still stops on it)."""
    study = write_study(tmp_path, "dry.toml", base=DRY, plugin_files={"flat.py": FLAT}, weighting={"name": "flat"})
    runs = tmp_path / "runs"
    assert main(["run", str(study), "--runs-dir", str(runs), "--set", "metric=[]"]) == 0
    (tmp_path / "flat.py").write_text(FLAT + "# changed\n")
    capsys.readouterr()
    before = files(runs)
    out = dry_run(capsys, study, runs, "--set", "metric=[]")
    assert "cells: 1 stale" in out and "plugin code changed: 30 steps to train again" in out
    assert "unless --recompute-stale" in out
    assert files(runs) == before
    assert main(["run", str(study), "--runs-dir", str(runs), "--set", "metric=[]"]) == 2
    assert "--recompute-stale" in capsys.readouterr().err


def test_the_probe_builds_models_from_the_training_split(tmp_path, capsys):
    """empirical_oracle needs the (half) training split, which only Dataset.splits() provides."""
    base = merged(DRY, {"data": {"name": "digits", "train_half": "a"}, "model": {"name": "empirical_oracle"},
                        "metric": [{"name": "kid", "features": "raw", "num_samples": 50, "subset_size": 20}]})
    out = dry_run(capsys, write_study(tmp_path, "oracle.toml", base=base), tmp_path / "runs")
    assert "probed:" in out and not (tmp_path / "runs").exists()
