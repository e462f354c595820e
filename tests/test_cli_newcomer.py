"""What a newcomer meets at the command line: fast start-up, help with defaults, whole plugin descriptions,
`--set` errors that say where the key came from, and a plain terminal table whose ± is labelled."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from ablate.cli import main
from ablate.runner import print_table


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
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n[data]\nname = "gmm2d"\n[model]\nname = "mlp"\n[train]\nsteps = 1\n'
                     '[[arm]]\ntarget = { name = "epsilon" }\n[[metric]]\nname = "gmm_fit"\n')
    assert main(["run", str(study), "--set", "train.bogus=1", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "train.bogus: unknown key (from --set train.bogus)" in capsys.readouterr().err
    study.write_text(study.read_text().replace("steps = 1\n", "steps = 1\nbogus = 1\n"))
    assert main(["run", str(study), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "train.bogus: unknown key" in err and "--set" not in err


def test_terminal_table_is_plain_and_labels_its_spread(capsys):
    frame = pd.DataFrame({"arm": ["a", "a", "b", "b", "a"], "sampler": ["ancestral"] * 4 + ["-"],
                          "key": ["fid"] * 4 + ["mean"], "value": [1.0, 2.0, 3.0, 5.0, 0.25]})
    print_table(frame)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mean ± sd over seeds")
    assert lines[1].split() == ["arm", "sampler", "fid", "mean"]  # one header line: no pivot leftovers
    # sd of (1, 2) = 0.7071; of (3, 5) = 1.414
    assert lines[2:] == [line for line in lines[2:] if not line.lstrip().startswith(("key", "arm "))]
    assert any(line.split()[:2] == ["a", "ancestral"] and "1.5 ± 0.71 (n=2)" in line for line in lines)
    assert any(line.split()[:2] == ["b", "ancestral"] and "4 ± 1.4 (n=2)" in line for line in lines)
    assert any(line.split() == ["a", "-", "0.25"] for line in lines)
