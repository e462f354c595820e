"""Third-party plugins through the entry-point group "ablate", with examples/ablate-example-sampler.

Installing the example with pip would be slow and would change the venv, so each test builds the
distribution pip would leave behind: a `<name>-<version>.dist-info` folder (METADATA and
entry_points.txt, read from the example's own pyproject.toml) on sys.path, and the example's folder
on sys.path for its module. importlib.metadata then finds it exactly as it finds an installed package.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

import ablate
from ablate.cli import main
from studies import run, write_study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ablate-example-sampler"
PYPROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
DIST, VERSION = PYPROJECT["project"]["name"], PYPROJECT["project"]["version"]
ORIGIN = f"{DIST} {VERSION}"
SAMPLER = "example_strided"


@pytest.fixture
def example_installed(tmp_path, monkeypatch):
    """The example package 'installed': a dist-info on sys.path pointing at its module."""
    site = tmp_path / "site-packages"
    info = site / f"{DIST.replace('-', '_')}-{VERSION}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n")
    entry_points = PYPROJECT["project"]["entry-points"]["ablate"]
    (info / "entry_points.txt").write_text("[ablate]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", DIST)  # only the example: nothing else installed leaks in
    return site


def test_example_package_is_a_setuptools_package_with_an_ablate_entry_point():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    assert PYPROJECT["project"]["entry-points"]["ablate"] == {"example": "ablate_example_sampler"}
    assert "ablate_example_sampler" in PYPROJECT["tool"]["setuptools"]["py-modules"]
    assert (EXAMPLE / "ablate_example_sampler.py").is_file()


def test_entry_point_is_discovered_with_package_origin(example_installed):
    registry = ablate.load_registry()
    assert registry.problems == []
    assert SAMPLER in registry.names("sampler")
    origin = registry.origin("sampler", SAMPLER)
    assert origin.source == "package" and str(origin) == ORIGIN
    assert str(registry.origin("sampler", "ancestral")) == "built-in"
    sampler = registry.create("sampler", SAMPLER, {"steps": 10})
    assert isinstance(sampler, ablate.Sampler) and sampler.params.steps == 10


@pytest.mark.parametrize(
    "env, loaded",
    [
        (None, True),  # unset: every installed plugin
        ("", False),  # empty: no third-party plugins
        (DIST, True),  # by distribution name
        ("example", True),  # by entry-point name
        (f"some-other-package, {DIST}", True),  # comma-separated, spaces ignored
        ("some-other-package", False),
    ],
)
def test_ablate_load_plugins_filters_third_party_plugins(example_installed, monkeypatch, env, loaded):
    if env is None:
        monkeypatch.delenv("ABLATE_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("ABLATE_LOAD_PLUGINS", env)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        registry = ablate.load_registry()
    assert (SAMPLER in registry.names("sampler")) is loaded
    # a name that matches no installed package (a typo would load nothing) is named, with what is installed
    unmatched = [p for p in registry.problems if "some-other-package" in p]
    assert len(unmatched) == int("some-other-package" in (env or "")), registry.problems
    assert all(f"installed: {DIST}" in p for p in unmatched)
    assert {"ancestral", "one_step", "ddim"} <= set(registry.names("sampler"))  # built-ins always load


def test_cli_plugins_lists_the_package_with_its_version(example_installed, capsys):
    assert main(["plugins", "--kind", "sampler"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"  {SAMPLER} "))
    assert f"[{ORIGIN}]" in line
    assert "steps = 100" in out  # its Params, with the default and the Field description
    assert "network evaluations" in out


def test_example_sampler_is_strided_ddpm(example_installed):
    """Its respaced posterior step is DDIM's eta = 1 step (Song et al. 2021, sec. 4.1): the same samples."""
    registry = ablate.load_registry()
    diffusion = registry.create("schedule", "linear").diffusion()
    data = registry.create("dataset", "gmm2d", {"n_modes": 3, "n_train": 10, "n_test": 10}).load()
    model = registry.create("model", "gmm_oracle")
    denoiser = model.denoiser(model.build(data.spec), registry.create("target", "epsilon"), diffusion, data.spec)
    out = {}
    for name, params in ((SAMPLER, {"steps": 25}), ("ddim", {"steps": 25, "eta": 1.0})):
        sampler = registry.create("sampler", name, params)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(128, 2, generator=g, dtype=torch.float64)
        out[name] = sampler.sample(denoiser, diffusion, x, 999, g)
        assert sampler.nfe(diffusion, 999) == 25
    torch.testing.assert_close(out[SAMPLER], out["ddim"], rtol=1e-9, atol=1e-9)


def test_study_run_records_the_third_party_origin_and_version(example_installed, tmp_path, capsys):
    study = write_study(tmp_path, "third_party.toml", base={}, study={"name": "third_party", "seeds": [0]},
                        data={"name": "gmm2d"}, model={"name": "gmm_oracle"}, sampler=[{"name": SAMPLER, "steps": 20}],
                        metric=[{"name": "gmm_fit", "num_samples": 300}], eval={"grid_samples": 0})
    runs = tmp_path / "runs"
    assert run(study, runs) == 0
    with sqlite3.connect(runs / "ablate.db") as db:
        (plugins,) = db.execute("SELECT plugins FROM runs WHERE study = 'third_party'").fetchone()
        rows = dict(db.execute("SELECT key, value FROM metrics WHERE sampler = ?", (f"{SAMPLER}(steps=20)",)).fetchall())
        (nfe,) = db.execute("SELECT DISTINCT nfe FROM metrics WHERE sampler = ?", (f"{SAMPLER}(steps=20)",)).fetchone()
    provenance = json.loads(plugins)
    assert provenance[f"sampler/{SAMPLER}"] == f"{DIST}=={VERSION}"  # the identity: name==version
    assert provenance["model/gmm_oracle"].startswith("built-in (ablate ")
    assert nfe == 20
    assert rows["modes_covered"] == 1.0 and math.isfinite(rows["nll"])
