"""Studies that share a runs folder (and cells): staleness is judged per stored result.

Two tiny gmm2d studies share the `epsilon` cell; A evaluates ancestral and ddim, B ancestral, one_step
and a local-file sampler, and A has a profile that runs only ancestral. Run alternately, nothing is
refused, nothing deleted and neither report changes; a changed local file makes only its own
results stale, `--recompute-stale` deletes only those, and the report says which plugin changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_faults import SAMPLER_FILE, sha256

from ablate import cli
from ablate.plugins import load_registry
from ablate.report import data as report_data
from ablate.store import REAL_DATA, Store
from studies import counts, gmm, query, run, write_study

METRICS = [{"name": "gmm_fit", "num_samples": 100}, {"name": "x0_error_by_t", "num_samples": 100, "timesteps": [0, 50, 99]}]
STUDY_A = {"grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
           "sampler": [{"name": "ancestral"}, {"name": "ddim", "steps": 10}],
           "profiles": {"few": {"sampler": [{"name": "ancestral"}]}}}
STUDY_B = {"grid": {"target": [{"name": "epsilon"}, {"name": "v"}]},
           "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 50}, {"name": "shrunk"}]}


def shared_study(root: Path, name: str, **tables) -> Path:
    """The gmm2d study at 30 steps in root/<name>.toml: A and B share its `epsilon` cell."""
    return write_study(root, f"{name[-1]}.toml", base=gmm(name, 30, hidden=16, checkpoint_every=30), metric=METRICS,
                       **tables)


def evals(runs: Path) -> list[tuple]:
    """Every stored evaluation, with the time it finished: a row recomputed would have a new one."""
    return query(runs, "SELECT cell, sampler, metric, step, weights, finished, plugins FROM evals ORDER BY 1, 2, 3, 4, 5")


def metric_rows(runs: Path) -> list[tuple]:
    return query(runs, "SELECT * FROM metrics ORDER BY 1, 2, 3, 4, 5, 6")


def reported(runs: Path, study: str, profile: str = "") -> list[tuple]:
    """What the report of a study shows: arm, seed, sampler, metric, key and value of each result."""
    store = Store(runs / "ablate.db")
    try:
        results = report_data.load(store, study, profile, runs).results
    finally:
        store.close()
    return sorted(zip(results.arm, results.seed, results.sampler, results.metric, results.key, results.value, strict=True))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A and B run once into one runs folder (each test works on a copy)."""
    root = tmp_path_factory.mktemp("shared")
    plugin = root / "shrunk.py"
    plugin.write_text(SAMPLER_FILE.format(scale=1.0))
    a = shared_study(root, "shared_a", **STUDY_A)
    b = shared_study(root, "shared_b", plugins=[str(plugin)], **STUDY_B)
    runs = root / "runs"
    assert run(a, runs) == 0
    assert run(b, runs) == 0
    return root


def copy_of(shared: Path, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    root = tmp_path / "copy"
    shutil.copytree(shared, root)
    for name in ("a.toml", "b.toml"):  # the plugin path in b.toml points into the copy
        text = (root / name).read_text().replace(str(shared), str(root))
        (root / name).write_text(text)
    return root / "a.toml", root / "b.toml", root / "shrunk.py", root / "runs"


def test_alternating_studies_and_a_subset_profile_refuse_and_delete_nothing(shared, tmp_path, capsys):
    a, b, _, runs = copy_of(shared, tmp_path)
    shared_cells = query(runs, "SELECT cell FROM run_cells GROUP BY cell HAVING COUNT(DISTINCT run) = 2")
    assert len(shared_cells) == 1  # the epsilon cell: trained once, evaluated by both
    before = {s: reported(runs, s) for s in ("shared_a", "shared_b")}
    stored, rows = evals(runs), metric_rows(runs)
    assert {s for _, s, *_ in stored} >= {"ancestral", "ddim(steps=10)", "one_step(jump_at=50)", "shrunk"}

    for study, flags in ((a, ()), (b, ()), (a, ("--profile", "few")), (a, ()), (b, ()), (a, ("--profile", "few"))):
        assert run(study, runs, *flags) == 0, capsys.readouterr().err
        assert "already done" in capsys.readouterr().out
        assert evals(runs) == stored and metric_rows(runs) == rows  # nothing recomputed, nothing deleted
    assert run(b, runs, "--recompute-stale") == 0  # nothing is stale, so nothing is deleted
    assert "recomputing" not in capsys.readouterr().out
    assert evals(runs) == stored and metric_rows(runs) == rows
    assert {s: reported(runs, s) for s in ("shared_a", "shared_b")} == before
    few = reported(runs, "shared_a", "few")
    assert few and {r[2] for r in few} == {"ancestral", "-", "real data (held-out)"}
    assert set(few) <= set(before["shared_a"])


def test_a_changed_local_file_makes_only_its_own_results_stale(shared, tmp_path, capsys):
    a, b, plugin, runs = copy_of(shared, tmp_path)
    stored, rows = evals(runs), metric_rows(runs)
    plugin.write_text(SAMPLER_FILE.format(scale=0.5))
    capsys.readouterr()

    assert run(a, runs) == 0  # A does not use the file: its results are current
    assert run(b, runs) == 2
    err = capsys.readouterr().err
    listed = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(listed) == 2 and all(line.startswith("  evaluation shrunk x gmm_fit(num_samples=100) of ") for line in listed)
    assert all("sampler/shrunk was " in line and " sha256:" in line for line in listed)
    assert evals(runs) == stored and metric_rows(runs) == rows

    assert run(b, runs, "--recompute-stale") == 0
    assert capsys.readouterr().out.count("recomputing evaluation shrunk") == 2
    kept = [e for e in stored if e[1] != "shrunk"]
    assert [e for e in evals(runs) if e[1] != "shrunk"] == kept  # every other row stays, A's and B's
    assert [r for r in metric_rows(runs) if r[1] != "shrunk"] == [r for r in rows if r[1] != "shrunk"]
    redone = [e for e in evals(runs) if e[1] == "shrunk"]
    assert len(redone) == 2 and all(f"sha256:{sha256(plugin)}" in e[6] for e in redone)
    assert counts(runs)["evals"] == len(stored)
    assert run(a, runs) == 0 and run(b, runs) == 0


def test_the_report_says_when_its_results_rest_on_changed_plugin_code(shared, tmp_path, capsys):
    a, b, plugin, runs = copy_of(shared, tmp_path)
    assert run(b, runs) == 0  # the copy's file is this study's now (its stored results name the original's path)
    plugin.write_text(SAMPLER_FILE.format(scale=0.5))
    out = tmp_path / "reports"
    capsys.readouterr()
    assert cli.main(["report", str(a), str(b), "--runs-dir", str(runs), "--out", str(out)]) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: study shared_b: ")  # one line, and none for A, which does not use the file
    assert "(sampler/shrunk)" in warning and "--recompute-stale" in warning

    def setup(name: str) -> str:
        return (out / name / "README.md").read_text().split("## Setup", 1)[1].split("\n## ", 1)[0]

    (bullet,) = [line for line in setup("shared_b").splitlines() if "Changed plugin code" in line]
    assert "`sampler/shrunk`" in bullet and f"sha256:{sha256(plugin)}" in bullet and "ancestral" not in bullet
    assert "Changed plugin code" not in setup("shared_a")

    assert run(b, runs, "--recompute-stale") == 0
    store = Store(runs / "ablate.db")
    try:
        assert report_data.load(store, "shared_b", "", runs, load_registry()).changed == {}
    finally:
        store.close()


def test_staleness_is_judged_per_plugin_of_the_evaluations_this_run_makes(tmp_path):
    """The rule itself, on the store: only this run's sampler and metric labels are judged, each by the
    plugins its record names; a local file by its content, wherever it lies."""
    store = Store(tmp_path / "ablate.db")
    try:
        ancestral, fid = {"sampler/ancestral": "built-in (ablate 2)"}, {"metric/fid": "built-in (ablate 2)"}
        store.set_identities({"ancestral": ancestral}, {"fid": fid})
        record = lambda **ids: json.dumps(ids)  # noqa: E731
        assert not store.eval_stale("ancestral", "fid", record(**ancestral, **fid))
        assert store.eval_stale("ancestral", "fid", record(**{"sampler/ancestral": "built-in (ablate 1)"}, **fid))
        assert store.eval_stale("ancestral", "fid", None)  # recorded without identities
        # another study's sampler and metric: not this run's to judge, whatever their code
        assert not store.eval_stale("ddim", "fid", record(**{"sampler/ddim": "built-in (ablate 1)"}, **fid))
        assert not store.eval_stale("ancestral", "kid", record(**ancestral, **{"metric/kid": "built-in (ablate 1)"}))
        # a plugin only one side names is no change; an evaluation setting only one side sets is
        assert not store.eval_stale("ancestral", "fid", record(**fid))
        assert store.eval_stale("ancestral", "fid", record(**ancestral, **fid, eval='{"reference": "train"}'))
        assert store.eval_stale(REAL_DATA, "fid", record(**{"metric/fid": "built-in (ablate 1)"}))
        # a local file: its content, not its path
        store.set_identities({"mine": {"sampler/mine": "/new/mine.py sha256:abc"}}, {"fid": fid})
        assert not store.eval_stale("mine", "fid", record(**{"sampler/mine": "/old/mine.py sha256:abc"}, **fid))
        assert store.eval_stale("mine", "fid", record(**{"sampler/mine": "/new/mine.py sha256:abd"}, **fid))
    finally:
        store.close()
