"""Malformed studies and command lines, as a user writes them: each exits with code 2 and one `error:`
that names the study file and the key path, prints no traceback and trains nothing. Then a hypothesis
fuzz of study contents and overrides: validation either accepts a study or raises AblateError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate import AblateError
from ablate.study import load_study
from studies import plugin, run, study_text

BASE = study_text(**{"study": {"name": "bad_input"}, "schedule": {"T": 100},
                     "grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
                     "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 99}],
                     "profiles": {"quick": {"train.steps": 2}}})  # the text each case edits as a user would

NO_SAMPLE = plugin('''
from ablate import Sampler


class Lazy(Sampler):
    """Has a name and Params, but no `sample`."""

    name = "lazy"
''', ablate_samplers=["Lazy"])


def sub(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


def both(*edits):
    def edit(text: str) -> str:
        for e in edits:
            text = e(text)
        return text
    return edit


def head(text: str):
    return lambda study: text + study


def tail(text: str):
    return lambda study: study + text


CONTRAST = '\n[[contrast]]\nmetric = "nll"\nbaseline = "epsilon"\ncompare = ["x1"]\nmargin = 0.1\n'

# (id, edit of the study text or None, extra CLI arguments, key path in the message, other words in it)
CASES = [
    # syntax
    ("toml: unclosed table header", sub("[model]", "[model"), [], "", ["not valid TOML", "line"]),
    ("toml: key defined twice", sub("hidden = 16", "hidden = 16\nhidden = 32"), [], "", ["not valid TOML"]),
    ("toml: value missing", sub("steps = 5", "steps ="), [], "", ["not valid TOML"]),
    # wrong types
    ("steps is a string", sub("steps = 5", 'steps = "many"'), [], "train.steps", ["valid integer", "'many'"]),
    ("seeds is a number", sub("seeds = [0]", "seeds = 3"), [], "study.seeds", ["valid list"]),
    ("seeds hold strings", sub("seeds = [0]", 'seeds = ["a"]'), [], "study.seeds[0]", ["valid integer"]),
    ("sampler is a string", both(sub('[[sampler]]\nname = "ancestral"\n\n[[sampler]]\nname = "one_step"\njump_at = 99\n', ""),
                                 head('sampler = "ancestral"\n')), [], "sampler", ["valid list"]),
    ("model is a string", sub('[model]\nname = "mlp"\nhidden = 16\n', ""), ["--set", "model=mlp"], "model",
     ["valid dictionary"]),
    ("plugins is a string", head('plugins = "mine.py"\n'), [], "plugins", ["valid list"]),
    ("plugin name is a number", sub('name = "mlp"', "name = 3"), [], "model", ["expected a table with a `name`"]),
    ("grid axis is not a list", sub('target = [{ name = "epsilon" }, { name = "x0" }]', 'target = "epsilon"'), [],
     "grid.target", ["valid list"]),
    ("plugin table without a name", sub('name = "mlp"\n', ""), [], "model", ["expected a table with a `name`"]),
    # unknown keys and plugins
    ("unknown section", head("[trian]\nsteps = 3\n"), [], "trian", ["unknown key"]),
    ("unknown train key", sub("steps = 5", "stpes = 5"), [], "train.stpes", ["unknown key"]),
    ("unknown eval key", sub("grid_samples = 0", "grid_sampels = 0"), [], "eval.grid_sampels", ["unknown key"]),
    ("unknown study key", sub('name = "bad_input"', 'name = "bad_input"\nnme = "x"'), [], "study.nme", ["unknown key"]),
    ("unknown plugin param", sub("hidden = 16", "hiden = 16"), [], "model.hiden", ["unknown key"]),
    ("unknown sampler", sub('name = "ancestral"', 'name = "ancestrl"'), [], "sampler[0].name",
     ["unknown sampler 'ancestrl'", "did you mean 'ancestral'?"]),
    ("unknown dataset", sub('name = "gmm2d"', 'name = "gmm3d"'), [], "data.name", ["unknown dataset 'gmm3d'"]),
    ("unknown target in grid", sub('{ name = "x0" }', '{ name = "xo" }'), [], "grid.target[1].name",
     ["unknown target 'xo'"]),
    ("unknown section in an arm", tail("\n[[arm]]\nfoo = 1\n"), [], "arm[0]", ["'foo' is not under"]),
    # bad params, empty grids, zero or negative steps
    ("study name with a space", sub('name = "bad_input"', 'name = "bad input"'), [], "study.name", ["pattern"]),
    ("no seeds", sub("seeds = [0]", "seeds = []"), [], "study.seeds", ["at least 1"]),
    ("sampler param not allowed", sub("jump_at = 99", 'jump_at = 99\nvariance = "huge"'), [], "sampler[1].variance",
     ["'posterior' or 'beta'"]),
    ("ddim with zero steps", tail('\n[[sampler]]\nname = "ddim"\nsteps = 0\n'), [], "sampler[2].steps",
     ["greater than or equal to 1"]),
    ("metric with one sample", sub("num_samples = 100", "num_samples = 1"), [], "metric[0].num_samples",
     ["greater than or equal to 2"]),
    ("empty grid", sub('target = [{ name = "epsilon" }, { name = "x0" }]', "target = []"), [], "grid.target",
     ["empty list", "no cells"]),
    ("zero steps", sub("steps = 5", "steps = 0"), [], "train.steps", ["greater than or equal to 1"]),
    ("negative steps", sub("steps = 5", "steps = -5"), [], "train.steps", ["greater than or equal to 1"]),
    ("zero batch size", sub("batch_size = 16", "batch_size = 0"), [], "train.batch_size", ["greater than or equal to 1"]),
    ("negative learning rate", sub("warmup = 1", "warmup = 1\nlr = -1e-3"), [], "train.lr", ["greater than 0"]),
    ("ema of 1", sub("warmup = 1", "warmup = 1\nema = 1.0"), [], "train.ema", ["less than 1"]),
    ("grid value out of range", sub("[grid]\n", '[grid]\n"train.lr" = [1e-3, -1.0]\n'), [], "grid (train).lr",
     ["greater than 0"]),
    ("two grid options that are the same cell", sub('{ name = "x0" }', '{ name = "epsilon" }'), [], "grid",
     ["same config"]),
    # jump_at >= T, and other combinations only a plugin's check can see
    ("jump_at = T", sub("jump_at = 99", "jump_at = 100"), [], "sampler[1].jump_at",
     ["must be below schedule.T = 100", "got 100"]),
    ("jump_at >= T of a grid schedule", sub("[grid]\n", '[grid]\nschedule = [{ name = "linear", T = 100 }, '
                                             '{ name = "cosine", T = 50 }]\n'), [], "sampler[1].jump_at",
     ["must be below schedule.T = 50", "got 99"]),
    ("gmm_fit on image data", sub('name = "gmm2d"\nn_train = 200\nn_test = 100', 'name = "digits"'), [], "metric[0]",
     ["gmm_fit needs a dataset with a known mixture", "'digits'"]),
    ("gmm2d weights of the wrong length", sub("n_test = 100", "n_test = 100\nweights = [1.0, 2.0]"), [],
     "data.weights", ["must be 8 non-negative numbers"]),
    # plugin files
    ("missing plugin file", head('plugins = ["./missing_plugin.py"]\n'), [], "plugins",
     ["plugin file not found", "missing_plugin.py"]),
    ("plugin file raises on import", head('plugins = ["./raising_plugin.py"]\n'), [], "plugins",
     ["raising_plugin.py", "RuntimeError: no GPU here"]),
    ("plugin file with a syntax error", head('plugins = ["./broken_plugin.py"]\n'), [], "plugins",
     ["broken_plugin.py", "SyntaxError"]),
    ("missing plugin file on the command line", None, ["--plugins", "nowhere.py"], "plugins",
     ["plugin file not found", "nowhere.py"]),
    ("plugin class without a required method", head('plugins = ["./no_sample.py"]\n'), [], "plugins",
     ["no_sample.py", "Lazy does not define `sample`"]),
    # overrides and profiles
    ("--set on a key that does not exist", None, ["--set", "train.stepz=3"], "train.stepz", ["unknown key"]),
    ("--set on a section that does not exist", None, ["--set", "optimizer.lr=3"], "optimizer", ["unknown key"]),
    ("--set a wrong type", None, ["--set", "train.steps=many"], "train.steps", ["valid integer", "'many'"]),
    ("--set without a value", None, ["--set", "train.steps"], "train.steps", ["expected KEY=VALUE"]),
    ("--set an index past the end", None, ["--set", "sampler.5.name=ancestral"], "sampler.5.name", ["not an index"]),
    ("--set inside a value", None, ["--set", "train.steps.max=3"], "train.steps.max", ["is a value, not a table"]),
    ("--set an unknown plugin param", None, ["--set", "model.width=3"], "model.width", ["unknown key"]),
    ("--set jump_at past T", None, ["--set", "sampler.1.jump_at=500"], "sampler[1].jump_at", ["must be below"]),
    ("a device that does not exist", None, ["--set", "train.device=gpu"], "train.device", ["'gpu' is not a device"]),
    ("a profile that does not exist", None, ["--profile", "fast"], "profiles.fast", ["no profile 'fast'", "quick"]),
    ("a profile with an unknown key", tail('\n[profiles.typo]\n"train.stpes" = 3\n'), ["--profile", "typo"],
     "train.stpes", ["unknown key"]),
    # contrasts
    ("a contrast naming an arm that does not exist", tail(CONTRAST), [], "contrast[0]", ["'x1'"]),
]


def contrasts_landed() -> bool:
    """The [[contrast]] schema comes from the statistics work; until it lands, `contrast` is an unknown key."""
    from ablate.schema import study_model

    return "contrast" in study_model().model_fields


def write_files(tmp_path: Path, text: str) -> Path:
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "broken_plugin.py").write_text("def oops(:\n")
    (tmp_path / "no_sample.py").write_text(NO_SAMPLE)
    study = tmp_path / "study.toml"
    study.write_text(text)
    return study


def check_error(err: str, study: Path, key: str, words: list[str]) -> None:
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert str(study) in err, err
    assert key in err, err
    for word in words:
        assert word in err, err


def test_the_base_study_validates(tmp_path):
    """The control: unmodified, BASE is a valid study with two cells, so each case fails for its own edit."""
    study = load_study(write_files(tmp_path, BASE))
    assert [c.arm for c in study.cells] == ["epsilon", "x0"]


def test_there_are_at_least_30_distinct_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("edit", "extra", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_file_and_key(tmp_path, capsys, monkeypatch, edit, extra, key, words):
    if "contrast" in key and not contrasts_landed():
        pytest.xfail("the [[contrast]] schema has not landed in study.py yet")
    monkeypatch.chdir(tmp_path)  # --plugins paths are relative to the working directory
    study = write_files(tmp_path, edit(BASE) if edit else BASE)
    assert run(study, tmp_path / "runs", *extra) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out
    check_error(err, study, key, words)
    assert not (tmp_path / "runs").exists(), "nothing may start before the whole study is valid"


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = sub('name = "ancestral"', 'name = "ancestrl"')(BASE)
    text = sub("jump_at = 99", "jump_at = 100")(text)
    text = sub('name = "gmm2d"\nn_train = 200\nn_test = 100', 'name = "digits"')(text)
    assert run(write_files(tmp_path, text)) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    for key in ("sampler[0].name", "sampler[1].jump_at", "metric[0]: gmm_fit needs"):
        assert key in err, err


@pytest.mark.parametrize(("args", "key", "words"), [
    ([], "sampler[1].jump_at", ["must be below schedule.T = 100"]),
    (["--set", "train.steps=-1"], "train.steps", ["greater than or equal to 1"]),
], ids=["jump_at in the file", "negative steps by --set"])
def test_bad_input_through_a_real_process(tmp_path, args, key, words):
    """The installed entry point, not only cli.main: exit status 2, one line on stderr, nothing on stdout."""
    study = write_files(tmp_path, BASE if args else sub("jump_at = 99", "jump_at = 100")(BASE))
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "run", str(study), "--runs-dir", str(tmp_path / "runs"),
                           *args], capture_output=True, text=True, timeout=120, env={"ABLATE_LOAD_PLUGINS": "",
                                                                                     "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    check_error(proc.stderr, study, key, words)
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- fuzz

# TOML values: what a user can type. Keys: the study's real keys, a few typos and junk.
SCALARS = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.integers(-2, 1100), st.floats(0, 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["ancestral", "one_step", "ddim", "epsilon", "x0", "v", "mlp", "gmm2d", "digits",
                                     "linear", "cosine", "gmm_fit", "x0_error_by_t", "local", "cpu", "cuda:3", "gpu"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)),
                      max_leaves=6)
KEYS = st.sampled_from([
    "plugins", "study", "study.name", "study.seeds", "study.question", "data", "data.name", "data.n_train",
    "data.n_modes", "data.weights", "data.std", "model", "model.name", "model.hidden", "model.depth", "schedule",
    "schedule.name", "schedule.T", "schedule.beta_end", "schedule.s", "target", "target.name", "weighting",
    "weighting.name", "weighting.gamma", "train", "train.steps", "train.lr", "train.ema", "train.batch_size",
    "train.device", "eval", "eval.batch_size", "grid", "grid.target", "grid.schedule", "grid.train.lr", "arm",
    "sampler", "sampler.0", "sampler.1.jump_at", "sampler.1.name", "sampler.0.steps", "metric", "metric.0.name",
    "metric.0.num_samples", "profiles", "profiles.quick", "executor", "executor.name", "contrast", "stpes", "x.y.z",
])


def splice(raw: dict, dotted: str, value) -> None:
    """Put `value` at a dotted path of a parsed study, creating tables and replacing whatever is in the way."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part) % len(node)] if part.isdigit() and node else {}
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    if isinstance(node, list) and node:
        node[int(parts[-1]) % len(node) if parts[-1].isdigit() else 0] = value
    elif isinstance(node, dict):
        node[parts[-1]] = value


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3),
       overrides=st.lists(st.tuples(KEYS, st.text(max_size=12)), max_size=2))
def test_fuzzed_studies_validate_or_raise_ablate_error(tmp_path, edits, overrides):
    raw = tomllib.loads(BASE)
    for key, value in edits:
        splice(raw, key, value)
    study = tmp_path / "fuzz.toml"
    study.write_text(study_text(raw))
    assert json.dumps(tomllib.loads(study.read_text()), sort_keys=True) == json.dumps(raw, sort_keys=True)  # NaN too
    try:
        load_study(study, overrides=[f"{k}={v}" for k, v in overrides])
    except AblateError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list('[]{}="., \n#abcdeginmprstx0123_-')), max_size=60))
def test_fuzzed_overrides_and_garbage_lines(tmp_path, text):
    """Arbitrary text appended to a valid study, and the same text as a --set: never a traceback."""
    study = tmp_path / "garbage.toml"
    study.write_text(BASE + "\n" + text)
    for path, overrides in ((study, []), (write_files(tmp_path, BASE), [text])):
        try:
            load_study(path, overrides=overrides)
        except AblateError:
            pass


def test_fuzz_helpers_splice_real_keys():
    """The fuzz reaches into nested tables and lists, not only the top level."""
    raw = tomllib.loads(BASE)
    splice(raw, "sampler.1.jump_at", 7)
    splice(raw, "train.steps", "x")
    splice(raw, "grid.train.lr", [1])
    assert raw["sampler"][1]["jump_at"] == 7 and raw["train"]["steps"] == "x" and raw["grid"]["train"] == {"lr": [1]}
    assert tomllib.loads(study_text(raw))["sampler"][1]["jump_at"] == 7

