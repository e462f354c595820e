"""Bad study files and command lines: exit code 2, one `error:` naming the file and the key, no
traceback, nothing trained. Plus --set parsing, profiles, and a diverging cell that fails alone.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import ablate
from ablate import StudyError, cli
from ablate.overrides import parse_override
from ablate.study import load_study
from studies import DATA, TINY, merged, run, study_text, write_study

ERRORS = merged(TINY, {"study": {"name": "errors"}, "data": {"n_train": 300}, "schedule": {"T": 100},
                       "train": {"steps": 20, "batch_size": 32, "warmup": 5, "log_every": 5, "checkpoint_every": 10},
                       "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
                       "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 99}],
                       "profiles": {"quick": {"train.steps": 10}}})
BASE = study_text(ERRORS)  # the text the cases below edit as a user would


def write(tmp_path: Path, text: str = BASE, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)
    return edit


def prepend(head: str):
    return lambda text: head + text


def run_cli(tmp_path: Path, study: Path, *extra: str) -> int:
    return run(study, tmp_path / "runs", *extra)


def test_the_base_study_is_valid_and_runs(tmp_path, capsys):
    """The control for the cases below: unmodified, the same study runs (2 cells, in about a second)."""
    assert run_cli(tmp_path, write(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "study errors: 2 cells x 2 samplers x 1 metrics" in out and "FAILED" not in out


# (id, edit of the study text, extra CLI arguments, key path in the message, other words in the message)
CASES = [
    ("unknown plugin", replace('name = "ancestral"', 'name = "ancestrl"'), [],
     "sampler[0].name", ["unknown sampler 'ancestrl'", "did you mean 'ancestral'?"]),
    ("unknown plugin in grid", replace('{ name = "epsilon" }', '{ name = "epsilom" }'), [],
     "grid.target[0].name", ["unknown target 'epsilom'", "did you mean 'epsilon'?"]),
    ("wrong type", replace("steps = 20", 'steps = "many"'), [],
     "train.steps", ["valid integer", "'many'"]),
    ("wrong type by --set", None, ["--set", "train.steps=many"],
     "train.steps", ["valid integer", "'many'"]),
    ("out of range", replace("steps = 20", "steps = 0"), [],
     "train.steps", ["greater than or equal to 1"]),
    ("unknown key", replace("steps = 20", "stpes = 20"), [],
     "train.stpes", ["unknown key"]),
    ("unknown plugin param", replace("hidden = 16", "hiden = 16"), [],
     "model.hiden", ["unknown key"]),
    ("wrong plugin param type", replace("hidden = 16", 'hidden = "wide"'), [],
     "model.hidden", ["valid integer"]),
    ("unknown section", prepend("[trian]\nsteps = 3\n"), [],
     "trian", ["unknown key"]),
    ("missing local plugin file", prepend('plugins = ["./missing_plugin.py"]\n'), [],
     "plugins", ["plugin file not found", "missing_plugin.py"]),
    ("broken local plugin file", prepend('plugins = ["./broken_plugin.py"]\n'), [],
     "plugins", ["broken_plugin.py", "SyntaxError"]),
    ("bad --set", None, ["--set", "train.steps"],
     "train.steps", ["expected KEY=VALUE"]),
    ("bad --set index", None, ["--set", "sampler.5.name=ancestral"],
     "sampler.5.name", ["not an index"]),
    ("--set into a value", None, ["--set", "train.steps.max=3"],
     "train.steps.max", ["is a value, not a table"]),
    ("unknown profile", None, ["--profile", "fast"],
     "profiles.fast", ["no profile 'fast'", "quick"]),
    ("profile not a table", replace('quick = { "train.steps" = 10 }', "quick = 10"), ["--profile", "quick"],
     "profiles.quick", ["expected a table"]),
    ("invalid TOML", replace("hidden = 16", "hidden = = 16"), [],
     "", ["not valid TOML", "line"]),
    ("grid with an unknown section", replace("[grid]\n", "[grid]\nfoo = [1, 2]\n"), [],
     "grid.foo[0]", ["'foo' is not under"]),
    ("grid value fails validation", replace("[grid]\n", '[grid]\n"train.lr" = [1e-3, -1.0]\n'), [],
     "grid (train).lr", ["greater than 0"]),
    ("jump_at >= T", replace("jump_at = 99", "jump_at = 100"), [],
     "sampler[1].jump_at", ["must be below schedule.T = 100", "got 100"]),
    ("missing section", replace('[data]\nname = "gmm2d"\nn_train = 300\nn_test = 100\n', ""), [],
     "data", ["Field required"]),
]


@pytest.mark.parametrize(("edit", "extra", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_file_and_key(tmp_path, capsys, edit, extra, key, words):
    (tmp_path / "broken_plugin.py").write_text("def oops(:\n")
    study = write(tmp_path, edit(BASE) if edit else BASE)
    assert run_cli(tmp_path, study, *extra) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert str(study) in err
    assert key in err
    for word in words:
        assert word in err
    assert not (tmp_path / "runs").exists(), "nothing may start before the whole study is valid"


def test_missing_study_file(tmp_path, capsys):
    assert run_cli(tmp_path, tmp_path / "nope.toml") == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope.toml'}: study file not found\n"


def test_every_error_is_reported_at_once(tmp_path, capsys):
    text = replace('name = "ancestral"', 'name = "ancestrl"')(BASE)
    text = replace("jump_at = 99", "jump_at = 100")(text)
    text = replace('{ name = "x0" }', '{ name = "xo" }')(text)
    assert run_cli(tmp_path, write(tmp_path, text)) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    for key in ("sampler[0].name", "sampler[1].jump_at", "grid.target[1].name"):
        assert key in err


def test_unknown_executor(tmp_path, capsys):
    assert run_cli(tmp_path, write(tmp_path), "--executor", "slurmm") == 2
    err = capsys.readouterr().err
    assert "unknown executor 'slurmm'" in err and "Traceback" not in err


def test_api_raises_study_error(tmp_path):
    study = write(tmp_path, replace("steps = 20", "stpes = 20")(BASE))
    with pytest.raises(StudyError) as info:
        ablate.run_study(study, runs_dir=tmp_path / "runs", progress=False)
    assert info.value.file == str(study) and "train.stpes: unknown key" in str(info.value)


# --- a diverging cell fails alone -------------------------------------------------------------

def test_diverging_cell_is_marked_failed_and_the_study_goes_on(tmp_path, capsys):
    study = write_study(tmp_path, base=ERRORS, plugins=[str(DATA / "explode_weighting.py")],
                        grid={"target": None, "weighting": [{"name": "explode"}, {"name": "simple"}]},
                        train={"log_every": 1})  # the loss is checked where it is recorded
    assert run_cli(tmp_path, study) == 0
    out = capsys.readouterr().out
    assert "FAILED explode seed 0: loss became inf at step 1" in out
    with closing(sqlite3.connect(tmp_path / "runs" / "ablate.db")) as db:
        cells = dict(db.execute("SELECT rc.arm, c.status || ': ' || COALESCE(c.reason, '') FROM cells c "
                                "JOIN run_cells rc ON rc.cell = c.key").fetchall())
        arms = {arm for (arm,) in db.execute("SELECT DISTINCT rc.arm FROM metrics m JOIN run_cells rc ON rc.cell = m.cell")}
    assert cells == {"explode": "failed: loss became inf at step 1", "simple": "done: "}
    assert arms == {"simple"}

    # a rerun does not retry it, and still reports it
    frame = ablate.run_study(study, runs_dir=tmp_path / "runs")
    out = capsys.readouterr().out
    assert "failed earlier (loss became inf at step 1); not retried" in out
    assert "FAILED explode seed 0" in out
    assert set(frame.arm) == {"simple"} and len(frame) == 3 * 6  # 2 samplers and the real-data floor, 6 gmm_fit keys each


# --- --set values and profiles -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("train.steps=300", ("train.steps", 300)),
    (" train.steps = 3_000 ", ("train.steps", 3000)),
    ("train.lr=1e-3", ("train.lr", 1e-3)),
    ("train.bf16=false", ("train.bf16", False)),
    ("data.name=digits", ("data.name", "digits")),  # bare words are strings
    ('data.name="digits"', ("data.name", "digits")),
    ("data.root=~/data/x", ("data.root", "~/data/x")),
    ("study.seeds=[0, 1, 2]", ("study.seeds", [0, 1, 2])),
    ('model={ name = "mlp", hidden = 8 }', ("model", {"name": "mlp", "hidden": 8})),
    ('study.question="is a=b?"', ("study.question", "is a=b?")),  # split at the first '='
    ("sampler.1.jump_at=10", ("sampler.1.jump_at", 10)),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["train.steps", "=3", "", " = 3"])
def test_parse_override_rejects_missing_key_or_value(text):
    with pytest.raises(StudyError, match="expected KEY=VALUE"):
        parse_override(text)


PROFILES = """
[study]
name = "profiles"

[data]
name = "digits"

[model]
name = "unet"
ch = 8
ch_mult = [1, 2]

[schedule]
name = "linear"
T = 100
beta_end = 0.015

[[sampler]]
name = "ancestral"
variance = "beta"

[[sampler]]
name = "one_step"
jump_at = 99

[profiles.quick]
"model.hidden" = 16          # listed before the switch: still lands on the new plugin
"model.name" = "mlp"
"train.steps" = 7
"sampler.1.jump_at" = 10

[profiles.quick.schedule]    # a nested table is the same as dotted keys
T = 50

[profiles.same]
"model.name" = "unet"        # the same plugin: its other params stay
"model.ch" = 16

[profiles.whole]
model = { name = "mlp", depth = 2 }
sampler = [{ name = "one_step", jump_at = 10 }]
"""


@pytest.fixture
def profiles(tmp_path):
    return write(tmp_path, PROFILES)


def test_profile_switching_a_plugin_drops_its_params(profiles):
    study = load_study(profiles, profile="quick")
    (cell,) = study.cells
    assert cell.config["model"] == {"name": "mlp", "hidden": 16, "depth": 3, "skip": False}
    assert cell.config["train"]["steps"] == 7
    assert cell.config["schedule"] == {"name": "linear", "T": 50, "beta_start": 1e-4, "beta_end": 0.015, "scale_with_T": True}
    assert [s["name"] for s in study.samplers] == ["ancestral", "one_step"]
    assert study.samplers[0]["variance"] == "beta" and study.samplers[1]["jump_at"] == 10
    assert study.profile == "quick"


def test_profile_keeping_a_plugin_keeps_its_params(profiles):
    (cell,) = load_study(profiles, profile="same").cells
    assert cell.config["model"]["name"] == "unet"
    assert cell.config["model"]["ch"] == 16 and cell.config["model"]["ch_mult"] == [1, 2]


def test_profile_with_whole_tables(profiles):
    study = load_study(profiles, profile="whole")
    assert study.cells[0].config["model"] == {"name": "mlp", "hidden": 128, "depth": 2, "skip": False}
    assert study.samplers == [{"name": "one_step", "jump_at": 10, "variance": "posterior"}]


def test_set_applies_after_the_profile(profiles):
    (cell,) = load_study(profiles, profile="quick", overrides=["model.hidden=32", "train.steps=9"]).cells
    assert cell.config["model"] == {"name": "mlp", "hidden": 32, "depth": 3, "skip": False}
    assert cell.config["train"]["steps"] == 9
    # switching back by --set drops the profile's mlp params too: unet with its defaults
    (cell,) = load_study(profiles, profile="quick", overrides=["model.name=unet"]).cells
    assert cell.config["model"]["name"] == "unet" and "hidden" not in cell.config["model"]
    assert cell.config["model"]["ch"] == 128


def test_no_profile_leaves_the_file_as_written(profiles):
    study = load_study(profiles)
    (cell,) = study.cells
    assert cell.config["model"]["name"] == "unet" and cell.config["model"]["ch"] == 8
    assert cell.config["schedule"]["T"] == 100 and study.samplers[1]["jump_at"] == 99


# --- files that are not a UTF-8 TOML study ----------------------------------------------------

NOT_A_STUDY = {  # (file contents, or None for a directory; words in the one error line)
    "directory": (None, ["is a directory, not a study file"]),
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), ["a binary file, not a TOML study file"]),
    "latin-1": ('[study]\nname = "café"\n'.encode("latin-1"), ["not UTF-8 text", "byte 0xe9 on line 2", "save the study as UTF-8"]),
    "utf-16": (BASE.encode("utf-16"), ["a binary file"]),  # UTF-16 holds NUL bytes
    "empty": (b"", ["the study is empty", "[study] (with a name)", "[data]", "[model]"]),
    "only comments": (b"# a study, some day\n\n", ["the study is empty", "[data]"]),
}


@pytest.mark.parametrize("case", sorted(NOT_A_STUDY))
def test_a_file_that_is_not_a_utf8_toml_study(tmp_path, capsys, case):
    content, words = NOT_A_STUDY[case]
    study = tmp_path / "study.toml"
    study.mkdir() if content is None else study.write_bytes(content)
    assert run_cli(tmp_path, study) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {study}: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "runs").exists()


def test_a_byte_order_mark_is_accepted(tmp_path):
    """Windows editors may start UTF-8 with a BOM, which tomllib alone rejects: the same study loads."""
    plain = load_study(write(tmp_path, BASE))
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert [c.key for c in load_study(with_bom).cells] == [c.key for c in plain.cells]


@pytest.mark.parametrize("case", ["directory", "latin-1", "binary"])
def test_report_reads_study_files_the_same_way(tmp_path, capsys, case):
    from ablate.store import Store

    Store(tmp_path / "runs" / "ablate.db").close()  # a store, so that the study file is what fails
    content, words = NOT_A_STUDY[case]
    study = tmp_path / "study.toml"
    study.mkdir() if content is None else study.write_bytes(content)
    assert cli.main(["report", str(study), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: ") and words[0] in err and "Traceback" not in err
