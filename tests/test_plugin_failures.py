"""How broken plugins fail, as a user meets them: through `ablate run` and `ablate plugins`.

test_registry.py covers load_registry's own errors; here every local-file failure goes through the CLI
(exit 2, one line naming the file, no traceback), Params errors name their key path, and a broken
third-party package is a warning that never takes the other plugins down.
"""

from __future__ import annotations

import re
import textwrap
import types
from importlib.metadata import entry_points as real_entry_points
from types import SimpleNamespace

import pytest
from pydantic import Field

import ablate
import ablate.plugins as plugins_module
from ablate import Sampler, hookimpl
from ablate.cli import main
from studies import plugin, run, write_study

GOOD = plugin('''
from pydantic import Field

from ablate import Sampler


class Good(Sampler):
    """Returns its input."""

    name = "{name}"

    class Params(Sampler.Params):
        steps: int = Field(10, ge=1, description="pretend step count")

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x

    def nfe(self, diffusion, t_start):
        return 0
''', ablate_samplers=["Good"])


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def _study(tmp_path, plugins=(), samplers=({"name": "ddim", "steps": 5},), name="failures"):
    """The exact oracle of a 3-mode gmm2d under `samplers`, with the local plugin files `plugins`."""
    return write_study(tmp_path, base={}, plugins=[f"./{p}" for p in plugins], study={"name": name},
                       data={"name": "gmm2d", "n_modes": 3}, model={"name": "gmm_oracle"}, eval={"grid_samples": 0},
                       sampler=list(samplers), metric=[{"name": "gmm_fit", "num_samples": 100}])


def _run(tmp_path, study, *extra):
    return run(study, tmp_path / "runs", *extra)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- local plugin files


@pytest.mark.parametrize(
    "body, expected",
    [
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("import not_a_module_anywhere_xyz\n", "ModuleNotFoundError"),
        ("def f(:\n    pass\n", "SyntaxError"),
    ],
)
def test_run_with_plugin_file_that_fails_to_import(tmp_path, capsys, body, expected):
    plugin = _write(tmp_path / "broken.py", body)
    assert _run(tmp_path, _study(tmp_path, plugins=["broken.py"])) == 2
    err = _one_line_error(capsys)
    assert str(plugin.resolve()) in err and expected in err
    assert "study.toml: plugins:" in err  # where it was named
    assert not (tmp_path / "runs" / "ablate.db").exists()  # nothing ran


def test_run_with_broken_plugin_on_the_command_line(tmp_path, capsys):
    plugin = _write(tmp_path / "cli_broken.py", "raise RuntimeError('boom from --plugins')\n")
    assert _run(tmp_path, _study(tmp_path), "--plugins", str(plugin)) == 2
    err = _one_line_error(capsys)
    assert str(plugin.resolve()) in err and "boom from --plugins" in err


def test_run_with_missing_plugin_file(tmp_path, capsys):
    assert _run(tmp_path, _study(tmp_path, plugins=["nope.py"])) == 2
    err = _one_line_error(capsys)
    assert "plugin file not found" in err and str((tmp_path / "nope.py").resolve()) in err


MALFORMED = {
    "no_name": (
        """
        from ablate import Sampler, hookimpl

        class Nameless(Sampler):
            pass

        @hookimpl
        def ablate_samplers():
            return [Nameless]
        """,
        "Nameless has no `name`",
    ),
    "empty_name": (
        """
        from ablate import Sampler, hookimpl

        class Empty(Sampler):
            name = ""

        @hookimpl
        def ablate_samplers():
            return [Empty]
        """,
        "Empty has no `name`",
    ),
    "no_params": (
        """
        from ablate import Sampler, hookimpl

        class NoParams(Sampler):
            name = "no_params"
            Params = None

        @hookimpl
        def ablate_samplers():
            return [NoParams]
        """,
        "NoParams has no `Params`",
    ),
    "non_class": (
        """
        from ablate import hookimpl

        @hookimpl
        def ablate_samplers():
            return ["ddim"]
        """,
        "returned 'ddim', which is not a class",
    ),
    "hook_raises": (
        """
        from ablate import hookimpl

        @hookimpl
        def ablate_samplers():
            raise KeyError("inside the hook")
        """,
        "hook ablate_samplers raised KeyError",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_run_with_malformed_plugin_file(tmp_path, capsys, case):
    body, expected = MALFORMED[case]
    plugin = _write(tmp_path / f"{case}.py", body)
    assert _run(tmp_path, _study(tmp_path, plugins=[plugin.name])) == 2
    err = _one_line_error(capsys)
    assert str(plugin.resolve()) in err and expected in err


def test_malformed_file_is_a_warning_when_not_strict(tmp_path):
    bad = _write(tmp_path / "bad.py", MALFORMED["non_class"][0])
    good = _write(tmp_path / "good.py", GOOD.format(name="still_here"))
    with pytest.warns(UserWarning, match="not a class"):
        registry = ablate.load_registry([bad, good], strict_files=False)
    assert "still_here" in registry.names("sampler") and "ddim" in registry.names("sampler")


def test_run_with_duplicate_of_a_builtin(tmp_path, capsys):
    plugin = _write(tmp_path / "dup.py", GOOD.format(name="ddim"))
    assert _run(tmp_path, _study(tmp_path, plugins=["dup.py"])) == 2
    err = _one_line_error(capsys)
    assert "two sampler plugins are named 'ddim'" in err
    assert "built-in" in err and str(plugin.resolve()) in err


def test_two_local_files_with_one_name(tmp_path, capsys):
    a = _write(tmp_path / "a.py", GOOD.format(name="twin"))
    b = _write(tmp_path / "b.py", GOOD.format(name="twin"))
    assert _run(tmp_path, _study(tmp_path, plugins=["a.py"]), "--plugins", str(b)) == 2
    err = _one_line_error(capsys)
    assert "'twin'" in err and str(a.resolve()) in err and str(b.resolve()) in err


def test_params_rejecting_the_study_values_name_every_key_path(tmp_path, capsys):
    _write(tmp_path / "good.py", GOOD.format(name="mine"))
    samplers = [{"name": "ancestral"}, {"name": "mine", "steps": 0}, {"name": "mine", "stpes": 3}, {"name": "ddim", "eta": "lots"}]
    assert _run(tmp_path, _study(tmp_path, plugins=["good.py"], samplers=samplers)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "study.toml" in err and "Traceback" not in err
    assert "sampler[1].steps: Input should be greater than or equal to 1 (got 0)" in err
    assert "sampler[2].stpes: unknown key" in err
    assert "sampler[3].eta:" in err
    assert not (tmp_path / "runs" / "ablate.db").exists()  # validated before anything ran


def test_unknown_plugin_name_in_study_suggests_the_closest(tmp_path, capsys):
    _write(tmp_path / "good.py", GOOD.format(name="my_ddim"))
    assert _run(tmp_path, _study(tmp_path, plugins=["good.py"], samplers=[{"name": "my_dddim"}])) == 2
    err = capsys.readouterr().err
    assert "sampler[0].name: unknown sampler 'my_dddim'" in err and "did you mean 'my_ddim'" in err


# --------------------------------------------------------------------------- broken third-party packages


def _module(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


class _Nameless(Sampler):
    pass


class _Ok(Sampler):
    """A working third-party sampler."""

    name = "tp_ok"

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x


def _raise_import_error():
    raise ImportError("needs a package that is not installed")


BROKEN_PACKAGES = {
    "import_error": (_raise_import_error, "failed to import: ImportError"),
    "non_class": (lambda: _module("tp_non_class", ablate_samplers=lambda: [42]), "not a class"),
    "non_list": (lambda: _module("tp_non_list", ablate_samplers=lambda: None), "must return a list"),
    "no_name": (lambda: _module("tp_no_name", ablate_samplers=lambda: [_Nameless]), "has no `name`"),
    "hook_raises": (lambda: _module("tp_raises", ablate_samplers=lambda: 1 / 0), "ZeroDivisionError"),
    "misspelled_hook": (lambda: _module("tp_typo", ablate_sampler=lambda: [_Ok]), "unknown hook 'ablate_sampler'"),
    "bad_hook_signature": (lambda: _module("tp_sig", ablate_samplers=lambda extra: [_Ok]), "extra"),
}


def _install(monkeypatch, *fake):
    """The real entry points of group "ablate" plus fake third-party ones: (dist name, load function)."""
    eps = [SimpleNamespace(name=dist.replace("-", "_"), dist=SimpleNamespace(name=dist, version="0.3"), load=load)
           for dist, load in fake]
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [*real_entry_points(group=group), *eps])
    monkeypatch.delenv("ABLATE_LOAD_PLUGINS", raising=False)


@pytest.mark.parametrize("case", sorted(BROKEN_PACKAGES))
def test_broken_third_party_package_never_hides_the_others(monkeypatch, case):
    load, expected = BROKEN_PACKAGES[case]
    working = _module("tp_working", ablate_samplers=lambda: [_Ok])
    _install(monkeypatch, ("tp-broken", load), ("tp-working", lambda: working))
    with pytest.warns(UserWarning, match="tp-broken 0.3") as caught:
        registry = ablate.load_registry()
    assert len(registry.problems) == 1 and expected in registry.problems[0], registry.problems
    assert expected in str(caught[0].message)
    assert {"ancestral", "one_step", "ddim", "tp_ok"} <= set(registry.names("sampler"))
    assert str(registry.origin("sampler", "tp_ok")) == "tp-working 0.3"
    assert "gmm_oracle" in registry.names("model") and "gmm_fit" in registry.names("metric")


def test_broken_third_party_package_is_skipped_when_not_selected(monkeypatch):
    _install(monkeypatch, ("tp-broken", _raise_import_error))
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", "")
    registry = ablate.load_registry()
    assert registry.problems == []


def test_cli_plugins_with_broken_third_party_package_warns_and_lists_the_rest(monkeypatch, capsys):
    _install(monkeypatch, ("tp-broken", BROKEN_PACKAGES["non_class"][0]))
    assert main(["plugins", "--kind", "sampler"]) == 0
    captured = capsys.readouterr()
    assert "  ddim  [built-in]" in captured.out
    assert captured.err.startswith("warning: tp-broken 0.3: the sampler hook returned 42")


def test_run_with_broken_third_party_package_still_runs(monkeypatch, tmp_path, capsys):
    _install(monkeypatch, ("tp-broken", _raise_import_error))
    assert _run(tmp_path, _study(tmp_path)) == 0
    err = capsys.readouterr().err
    assert re.search(r"^warning: plugin 'tp_broken' from tp-broken 0.3 failed to import: ImportError", err, re.M)
    assert "Traceback" not in err
    assert (tmp_path / "runs" / "ablate.db").exists()


def test_third_party_duplicate_of_a_builtin_is_an_error_naming_both(monkeypatch, capsys):
    class Impostor(Sampler):
        name = "ancestral"

        def sample(self, denoiser, diffusion, x, t_start, generator):
            return x

    _install(monkeypatch, ("tp-impostor", lambda: _module("tp_impostor", ablate_samplers=lambda: [Impostor])))
    assert main(["plugins"]) == 2
    err = _one_line_error(capsys)
    assert "two sampler plugins are named 'ancestral'" in err and "built-in" in err and "tp-impostor 0.3" in err


# --------------------------------------------------------------------------- an invalid Params default

BAD_DEFAULT = GOOD.replace("Field(10, ge=1", "Field(0, ge=1")  # pydantic itself never checks a default
PARAMETER = "parameter `steps` = 0: Input should be greater than or equal to 1"


def test_local_file_with_an_invalid_default_fails_before_training(tmp_path, capsys):
    plugin = _write(tmp_path / "bad_default.py", BAD_DEFAULT.format(name="bad_default"))
    study = _study(tmp_path, plugins=["bad_default.py"], samplers=[{"name": "bad_default", "steps": 3}])
    assert _run(tmp_path, study) == 2
    err = _one_line_error(capsys)
    assert str(plugin.resolve()) in err and "sampler 'bad_default'" in err and PARAMETER in err
    assert "study.toml: plugins:" in err
    assert not (tmp_path / "runs" / "ablate.db").exists()  # nothing trained
    assert main(["plugins", "--plugins", str(plugin)]) == 2  # `ablate plugins` says the same
    assert PARAMETER in _one_line_error(capsys)


class _BadDefault(Sampler):
    """Its default step count fails its own constraint."""

    name = "tp_bad_default"

    class Params(Sampler.Params):
        steps: int = Field(0, ge=1)

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x


def test_third_party_plugin_with_an_invalid_default(monkeypatch, tmp_path, capsys):
    """Skipped with a warning by `ablate plugins` (the rest listed); a study naming it stops before training
    with one error naming it, its package and the parameter."""
    package = _module("tp_defaults", ablate_samplers=lambda: [_BadDefault, _Ok])
    _install(monkeypatch, ("tp-defaults", lambda: package))
    assert main(["plugins", "--kind", "sampler"]) == 0
    out, err = capsys.readouterr()
    assert "  tp_ok  [tp-defaults 0.3]" in out and "tp_bad_default" not in out
    assert err == f"warning: tp-defaults 0.3: sampler 'tp_bad_default' (_BadDefault) has an invalid default: {PARAMETER}\n"
    study = _study(tmp_path, samplers=[{"name": "tp_bad_default", "steps": 3}])
    assert _run(tmp_path, study) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    error = err[err.index("error:"):]
    assert "sampler[0].name: sampler 'tp_bad_default' cannot be used: tp-defaults 0.3:" in error and PARAMETER in error
    assert not (tmp_path / "runs" / "ablate.db").exists()


# --------------------------------------------------------------------------- ABLATE_LOAD_PLUGINS

def test_load_plugins_naming_no_installed_package_is_a_warning(monkeypatch, capsys):
    working = _module("tp_working", ablate_samplers=lambda: [_Ok])
    _install(monkeypatch, ("tp-working", lambda: working))
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", "tp-workng, ablate,tp_working")  # a typo, the built-ins, a match
    assert main(["plugins", "--kind", "sampler"]) == 0
    out, err = capsys.readouterr()
    assert "  tp_ok  [tp-working 0.3]" in out
    assert err == ("warning: ABLATE_LOAD_PLUGINS names tp-workng, which no installed plugin package provides; "
                   "installed: tp-working\n")
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", "tp-working")
    assert main(["plugins", "--kind", "sampler"]) == 0
    assert capsys.readouterr().err == ""
