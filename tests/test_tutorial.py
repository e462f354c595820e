"""docs/writing-a-plugin.md cannot rot: its titled code blocks are assembled into files and run.

Blocks opened as ```python title="my_ddim.py"``` (or toml, ...) are written to tmp_path under their
title; blocks with the same title are consecutive pieces of one file (joined by two blank lines). Untitled blocks (shell
sessions, printed output) are prose.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

import ablate
from ablate.cli import main
from ablate.study import load_study

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```\s*$', re.M | re.S)


def extract(doc: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for _, title, body in BLOCK.findall(doc.read_text()):
        files[title] = files[title] + "\n\n" + body if title in files else body
    return files


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The tutorial's files, written out, and its study run once through the CLI."""
    root = tmp_path_factory.mktemp("tutorial")
    files = extract(DOC)
    assert set(files) == {"my_ddim.py", "compare.toml", "jsonl_tracker.py"}, set(files)  # the last: tests/test_trackers.py
    for name, text in files.items():
        (root / name).write_text(text)
    runs = root / "runs"
    assert main(["run", str(root / "compare.toml"), "--runs-dir", str(runs)]) == 0
    return root, runs


def test_every_titled_block_is_extracted():
    text = DOC.read_text()
    titled = len(re.findall(r'^```\w+ title="', text, re.M))
    assert titled == len(BLOCK.findall(text)) >= 5
    assert compile(extract(DOC)["my_ddim.py"], "my_ddim.py", "exec")


def test_ablate_plugins_lists_the_tutorial_sampler(tutorial, capsys):
    root, _ = tutorial
    plugin = root / "my_ddim.py"
    assert main(["plugins", "--kind", "sampler", "--plugins", str(plugin)]) == 0
    out = capsys.readouterr().out
    assert f"  my_ddim  [{plugin.resolve()}]  DDIM:" in out
    assert "      steps = 50  number of network evaluations" in out
    assert "      eta = 0.0  " in out


def test_study_results_have_the_custom_sampler_rows(tutorial):
    root, runs = tutorial
    frame = ablate.run_study(root / "compare.toml", runs_dir=runs, progress=False)  # a rerun: reads the store
    assert set(frame.metric) == {"gmm_fit(num_samples=500)"} and set(frame.seed) == {0, 1} and set(frame.num_samples) == {500}
    nfe = frame.groupby("sampler").nfe.first().to_dict()
    assert nfe == {"ancestral": 1000, "my_ddim": 50, "my_ddim(eta=1.0)": 50, "my_ddim(steps=10)": 10,
                   "real data (held-out)": 0}  # the floor: real points scored like samples
    assert (frame.groupby(["sampler", "key"]).size() == 2).all()  # one value per seed
    means = frame.groupby(["sampler", "key"]).value.mean().unstack()
    # the oracle is exact: ancestral and 50-step DDIM both reproduce the mixture
    for sampler in ("ancestral", "my_ddim", "my_ddim(eta=1.0)"):
        row = means.loc[sampler]
        assert row.modes_covered == 1.0, sampler
        assert row.max_weight_error < 0.08, sampler  # 500 samples, 8 modes of weight 1/8: SE 0.015 each
        assert row.off_mode_fraction < 0.05, sampler
        assert 0.75 < row.std_ratio < 1.1, sampler
    # ... while 10 deterministic steps spread the modes far too wide (measured ~2.1x, 42% off-mode)
    assert means.loc["my_ddim(steps=10)"].std_ratio > 1.5
    assert means.loc["my_ddim(steps=10)"].nll > means.loc["ancestral"].nll + 2
    with sqlite3.connect(runs / "ablate.db") as db:
        provenance = pd.read_sql("SELECT plugins FROM runs", db).plugins.iloc[0]
    assert f'"sampler/my_ddim": "{(root / "my_ddim.py").resolve()} sha256:' in provenance  # the file and its content


def test_my_ddim_is_the_builtin_ddim(tutorial, registry):
    """Same noise in, same samples out: the tutorial's sampler and the built-in are one algorithm."""
    root, _ = tutorial
    with_file = ablate.load_registry([root / "my_ddim.py"])
    diffusion = registry.create("schedule", "linear").diffusion()
    data = registry.create("dataset", "gmm2d", {"n_train": 10, "n_test": 10}).load()
    oracle = registry.create("model", "gmm_oracle")
    denoiser = oracle.denoiser(oracle.build(data.spec), registry.create("target", "epsilon"), diffusion, data.spec)
    for params in ({"steps": 10}, {"steps": 37, "eta": 1.0}, {"steps": 1}):
        out = []
        for reg, name in ((with_file, "my_ddim"), (registry, "ddim")):
            sampler = reg.create("sampler", name, params)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(64, 2, generator=g, dtype=torch.float64)
            out.append(sampler.sample(denoiser, diffusion, x, 999, g))
            assert sampler.nfe(diffusion, 999) == params["steps"]
        torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)


def test_trained_profile_validates(tutorial):
    """Section 3's profile is not run here (it trains for minutes), only loaded and validated."""
    root, _ = tutorial
    study = load_study(root / "compare.toml", profile="trained")
    config = study.cells[0].config
    assert config["model"]["name"] == "mlp" and config["model"]["hidden"] == 256
    assert config["train"]["steps"] > 0 and study.metrics[0]["num_samples"] == 2000
    assert [s["name"] for s in study.samplers] == ["ancestral", "my_ddim", "my_ddim", "my_ddim"]
