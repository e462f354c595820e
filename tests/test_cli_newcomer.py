"""What a newcomer meets at the command line: fast start-up, help with defaults, whole plugin descriptions,
`--set` errors that say where the key came from and what it could have been, `ablate report` saying which
command comes first, and a terminal summary that fits 120 columns and labels its ±."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from ablate.cli import main
from ablate.plugins import load_registry
from ablate.store import REAL_DATA
from ablate.summary import WIDTH, print_summary, render
from studies import run, write_study


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {m for m in ("torch", "pandas", "matplotlib", "scipy") if m in out}


def test_help_and_version_import_neither_torch_nor_pandas():
    assert _imported_after("import ablate.cli; import ablate; ablate.__version__; ablate.cli.build_parser()") == set()


def test_plugins_command_does_not_import_pandas():
    code = "import contextlib, io\nfrom ablate.cli import main\nwith contextlib.redirect_stdout(io.StringIO()): main(['plugins'])"
    assert _imported_after(code) == {"torch"}  # the plugin classes are torch modules; nothing else heavy


def test_lazy_names_still_resolve():
    import ablate
    from ablate.interfaces import Sampler

    assert ablate.Sampler is Sampler and "Sampler" in ablate.__all__
    with pytest.raises(AttributeError):
        ablate.no_such_name  # noqa: B018


def test_help_shows_defaults_and_that_set_repeats(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: runs)" in text and "repeat for several keys" in text and "(default: None)" not in text
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "(default: reports)" in " ".join(capsys.readouterr().out.split())


def test_plugin_descriptions_are_whole_sentences(capsys):
    assert main(["plugins"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and "  [" in line]
    assert len(lines) > 10
    for line in lines:
        assert line.rstrip().endswith("."), line  # the first paragraph, not its first line
    oracle = next(line for line in lines if line.split()[0] == "gmm_oracle")
    assert "\n" not in oracle and len(oracle) > 100


def test_unknown_key_from_set_says_so(tmp_path, capsys):
    study = write_study(tmp_path, "s.toml", train={"steps": 1}, arm=[{"target": {"name": "epsilon"}}])
    assert main(["run", str(study), "--set", "train.bogus=1", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "train.bogus (from --set train.bogus): unknown key; known: steps, " in capsys.readouterr().err
    study.write_text(study.read_text().replace("steps = 1\n", "steps = 1\nbogus = 1\n"))
    assert main(["run", str(study), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "train.bogus: unknown key" in err and "--set" not in err


def test_terminal_summary_shows_headline_keys_with_mean_sd_and_n(capsys):
    frame = pd.DataFrame({"arm": ["a", "a", "b", "b", "a", "a", "b"], "sampler": ["ancestral"] * 4 + ["-", REAL_DATA, REAL_DATA],
                          "key": ["fid"] * 4 + ["mean", "fid", "fid"], "value": [1.0, 2.0, 3.0, 5.0, 0.25, 0.5, 0.5],
                          "nfe": [10] * 4 + [None, None, None]})
    declared = {"fid(features=raw)": {"fid": {"role": "headline"}}, "x0_error_by_t": {"mean": {"role": "diagnostic"}}}
    print_summary(frame, declared, arms=["b", "a"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mean ± sd over seeds")
    assert lines[1].split() == ["arm", "sampler", "fid"]  # the diagnostic `mean` is the report's, not the terminal's
    # sd of (3, 5) = 1.414, of (1, 2) = 0.7071; arms in the order given; the floor once, as it is the same for both
    assert [line.split("  ")[0].strip() for line in lines[2:]] == ["b", "a", "(every arm)"]
    assert "4 ± 1.41 (n=2)" in lines[2] and "1.5 ± 0.707 (n=2)" in lines[3] and lines[4].split()[-1] == "0.5"


def test_a_wide_summary_splits_its_metric_columns_into_blocks_that_fit():
    header = ["arm", "sampler", *(f"metric_{i}" for i in range(9))]
    rows = [[f"epsilon + simple + skip=True + arm {i}", "ddim(steps=10, eta=1.0)", *["1234 ± 56.7 (n=8)"] * 9] for i in range(3)]
    lines = render(header, rows)
    assert max(map(len, lines)) <= WIDTH
    blocks = "\n".join(lines).split("\n\n")
    assert len(blocks) > 1 and all(b.splitlines()[0].split()[:2] == ["arm", "sampler"] for b in blocks)
    assert sum(b.splitlines()[0].count("metric_") for b in blocks) == 9  # every column once
    long = render(["arm", "sampler", "kid"], [["x" * 200, "ancestral", "1 ± 2 (n=3)"]])
    assert max(map(len, long)) <= WIDTH and "…" in long[1]


SMALL = {"study": {"name": "small", "seeds": [0, 1]},
         "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}, {"name": "v"}],
                  "weighting": [{"name": "simple"}, {"name": "min_snr"}]},
         "sampler": [{"name": "ancestral"}, {"name": "ddim", "steps": 5, "eta": 1.0}],
         "metric": [{"name": "gmm_fit", "num_samples": 100}, {"name": "x0_error_by_t", "num_samples": 50}]}


def test_summary_of_a_real_run_fits_120_columns(tmp_path, capsys):
    assert run(write_study(tmp_path, "small.toml", **SMALL)) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("mean ± sd over seeds"))
    table = out[start + 1: next(i for i, line in enumerate(out) if line.startswith("done in"))]
    headline = [k for k, spec in load_registry().get("metric", "gmm_fit").keys.items() if spec.role == "headline"]
    assert table[0].split() == ["arm", "sampler", *headline]  # gmm_fit's headline; no t=..., no diagnostics
    assert len(table) == 1 + 6 * 2 + 1  # 6 arms x 2 samplers, and the floor once
    assert all(len(line) <= WIDTH for line in table), max(map(len, table))
    assert all(line.rstrip().endswith("(n=2)") for line in table[1:-1])


def test_unknown_key_lists_the_known_ones_and_the_closest(tmp_path, capsys):
    study = write_study(tmp_path, "small.toml", **SMALL)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["run", str(study), "--set", "train.stesp=3", *runs]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {study}: invalid study: train.stesp (from --set train.stesp): "
                                                    "unknown key; known: steps, ")
    assert err.endswith("; did you mean 'steps'?\n")
    assert main(["run", str(study), "--set", "nosuch.key=1", *runs]) == 2
    err = capsys.readouterr().err
    assert "nosuch (from --set nosuch.key): unknown key; known: plugins, study, " in err
    assert main(["run", str(study), "--set", "model.hiden=3", *runs]) == 2  # a plugin's Params
    assert "model.hiden (from --set model.hiden): unknown key; known: hidden, depth, skip; did you mean 'hidden'?" in capsys.readouterr().err


def test_several_problems_are_one_error_line_then_one_line_each(tmp_path, capsys):
    study = write_study(tmp_path, "small.toml", **SMALL)
    assert main(["run", str(study), "--set", "train.stesp=3", "--set", "eval.bogus=1", "--runs-dir", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"error: {study}: invalid study (2 problems):" and len(lines) == 3
    assert lines[1].startswith("  train.stesp (from --set train.stesp): unknown key")
    assert lines[2].startswith("  eval.bogus (from --set eval.bogus): unknown key")


@pytest.mark.parametrize("args", [["--set", "train.steps", "300"], ["--set", "train.steps=", "300"]])
def test_set_with_a_space_names_the_fix(tmp_path, capsys, args):
    study = write_study(tmp_path, "small.toml", **SMALL)
    assert main(["run", str(study), *args, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {' '.join(args)}: expected --set KEY=VALUE as one argument, e.g. --set train.steps=300\n"
    assert not (tmp_path / "runs").exists()
    assert main(["run", "--set", "train.steps", "300", str(study)]) == 2  # the stray value before the study
    assert capsys.readouterr().err.startswith("error: --set train.steps 300: expected --set KEY=VALUE")


def test_report_without_results_says_which_command_to_run(tmp_path, capsys):
    study = write_study(tmp_path, "small.toml", **SMALL)
    runs = tmp_path / "runs"
    assert main(["report", str(study), "--runs-dir", str(runs), "--out", str(tmp_path / "reports")]) == 2
    assert "run `ablate run STUDY` first" in capsys.readouterr().err  # no store at all
    other = write_study(tmp_path, "other.toml", **{**SMALL, "study": {"name": "other", "seeds": [0, 1]}, "train": {"steps": 1},
                                                   "sampler": [{"name": "ancestral"}, {"name": "ddim", "steps": 1, "eta": 1.0}]})
    assert main(["run", str(other), "--set", "study.seeds=[0]", "--set", "grid.weighting=[{name = 'simple'}]",
                 "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert main(["report", str(study), "--runs-dir", str(runs), "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no runs of study 'small' in {runs / 'ablate.db'}; run `ablate run {study}` first (or pass the --runs-dir it ran with)\n"
