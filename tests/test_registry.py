"""Plugin discovery and the registry's handling of bad input; the `ablate plugins` command."""

from __future__ import annotations

import re
import textwrap

import pytest
from pydantic import ValidationError

import ablate
from ablate.cli import main
from studies import plugin

# The standard plugins of DESIGN.md that live in plugins/ (ray is an optional extra, not part of the
# built-in package; the tutorial's worked example is `my_ddim`, beside the built-in `ddim`).
STANDARD = {
    "schedule": {"linear", "cosine"},
    "target": {"epsilon", "x0", "v"},
    "weighting": {"simple", "vlb", "eps_equivalent", "min_snr"},
    "sampler": {"ancestral", "one_step", "ddim"},
    "model": {"unet", "mlp", "gmm_oracle"},
    "dataset": {"digits", "gmm2d", "mnist", "cifar10", "image_folder"},
    "metric": {"fid", "kid", "x0_error_by_t", "gmm_fit"},
    "executor": {"local"},
}

GOOD_SAMPLER = plugin('''
from ablate import Sampler


class MySampler(Sampler):
    """Returns its input."""

    name = "{name}"

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x

    def nfe(self, diffusion, t_start):
        return 0
''', ablate_samplers=["MySampler"])


def _write(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_text(textwrap.dedent(text))
    return path


def test_builtins_are_registered_with_builtin_origin(registry):
    for kind, names in STANDARD.items():
        assert names <= set(registry.names(kind)), kind
        for name in names:
            assert str(registry.origin(kind, name)) == "built-in"
    assert registry.problems == []


def test_get_unknown_kind(registry):
    with pytest.raises(ablate.PluginError, match="unknown plugin kind 'samplr'") as info:
        registry.get("samplr", "ancestral")
    assert "sampler" in str(info.value)
    with pytest.raises(ablate.PluginError):
        registry.names("nope")


def test_get_unknown_name_lists_known_and_suggests_closest(registry):
    with pytest.raises(ablate.PluginError) as info:
        registry.get("sampler", "ancestrl")
    message = str(info.value)
    assert "'ancestrl'" in message
    assert "did you mean 'ancestral'" in message
    assert "ancestral" in message and "one_step" in message


def test_get_unknown_name_without_close_match(registry):
    with pytest.raises(ablate.PluginError) as info:
        registry.get("target", "zzzzzz")
    message = str(info.value)
    assert all(name in message for name in STANDARD["target"])
    assert "did you mean" not in message


def test_create_rejects_unknown_params(registry):
    with pytest.raises(ValidationError):
        registry.create("sampler", "ancestral", {"varience": "beta"})
    with pytest.raises(ValidationError):
        registry.create("sampler", "ancestral", {"variance": "huge"})


def test_good_local_file_registers_with_its_path_as_origin(tmp_path):
    path = _write(tmp_path, "my_sampler.py", GOOD_SAMPLER.format(name="my_sampler"))
    registry = ablate.load_registry([path])
    cls = registry.get("sampler", "my_sampler")
    origin = registry.origin("sampler", "my_sampler")
    assert origin.source == "file"
    assert str(origin) == str(path.resolve())
    assert "ancestral" in registry.names("sampler")
    sampler = registry.create("sampler", "my_sampler")
    assert isinstance(sampler, cls) and isinstance(sampler, ablate.Sampler)


def test_duplicate_name_names_both_origins(tmp_path):
    path = _write(tmp_path, "dup.py", GOOD_SAMPLER.format(name="ancestral"))
    with pytest.raises(ablate.PluginError) as info:
        ablate.load_registry([path])
    message = str(info.value)
    assert "'ancestral'" in message
    assert "built-in" in message
    assert str(path.resolve()) in message


def test_file_that_raises_on_import_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "broken.py", "raise RuntimeError('boom at import')\n")
    with pytest.raises(ablate.PluginError) as info:
        ablate.load_registry([path])
    assert str(path.resolve()) in str(info.value)
    assert "boom at import" in str(info.value)


def test_broken_file_is_a_warning_when_not_strict(tmp_path):
    broken = _write(tmp_path, "broken2.py", "import not_a_module_anywhere_xyz\n")
    good = _write(tmp_path, "good2.py", GOOD_SAMPLER.format(name="good_one"))
    with pytest.warns(UserWarning, match="broken2.py"):
        registry = ablate.load_registry([broken, good], strict_files=False)
    assert len(registry.problems) == 1
    assert str(broken.resolve()) in registry.problems[0]
    for kind, names in STANDARD.items():
        assert names <= set(registry.names(kind))
    assert "good_one" in registry.names("sampler")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ablate.PluginError, match="not found"):
        ablate.load_registry([tmp_path / "nope.py"])


def test_hook_returning_a_non_class(tmp_path):
    path = _write(
        tmp_path,
        "nonclass.py",
        """
        from ablate import hookimpl

        @hookimpl
        def ablate_samplers():
            return [42]
        """,
    )
    with pytest.raises(ablate.PluginError) as info:
        ablate.load_registry([path])
    assert "not a class" in str(info.value)
    assert str(path.resolve()) in str(info.value)


def test_hook_returning_a_non_list(tmp_path):
    path = _write(
        tmp_path,
        "nonlist.py",
        """
        from ablate import hookimpl

        @hookimpl
        def ablate_samplers():
            return None
        """,
    )
    with pytest.raises(ablate.PluginError, match="list"):
        ablate.load_registry([path])


def test_class_without_name(tmp_path):
    path = _write(
        tmp_path,
        "noname.py",
        """
        from ablate import Sampler, hookimpl

        class Nameless(Sampler):
            pass

        @hookimpl
        def ablate_samplers():
            return [Nameless]
        """,
    )
    with pytest.raises(ablate.PluginError) as info:
        ablate.load_registry([path])
    assert "name" in str(info.value) and "Nameless" in str(info.value)


def test_class_of_the_wrong_kind(tmp_path):
    path = _write(
        tmp_path,
        "wrongkind.py",
        """
        from ablate import Sampler, hookimpl

        class S(Sampler):
            name = "s"

        @hookimpl
        def ablate_targets():
            return [S]
        """,
    )
    with pytest.raises(ablate.PluginError, match="not a subclass of ablate.Target"):
        ablate.load_registry([path])


def test_misspelled_hook_fails_loudly(tmp_path):
    path = _write(
        tmp_path,
        "typo.py",
        """
        from ablate import hookimpl

        @hookimpl
        def ablate_sampler():
            return []
        """,
    )
    with pytest.raises(ablate.PluginError) as info:
        ablate.load_registry([path])
    assert str(path.resolve()) in str(info.value)


# --------------------------------------------------------------------------- CLI

ENTRY = re.compile(r"^  (\S+)  \[([^\]]+)\]")


def _entries(out: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in out.splitlines() if (m := ENTRY.match(line))}


def test_cli_plugins_lists_every_standard_plugin(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    entries = _entries(out)
    expected = set().union(*STANDARD.values())
    assert expected <= set(entries), expected - set(entries)
    assert all(entries[name] == "built-in" for name in expected)
    for kind in STANDARD:
        assert f"{kind}s:" in out


def test_cli_plugins_one_kind(capsys):
    assert main(["plugins", "--kind", "sampler"]) == 0
    out = capsys.readouterr().out
    assert set(_entries(out)) == STANDARD["sampler"]
    headers = [line for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headers == ["samplers:"]
    assert "variance" in out and "jump_at" in out  # parameters are shown


def test_cli_plugins_with_local_file(capsys, tmp_path):
    path = _write(tmp_path, "cli_sampler.py", GOOD_SAMPLER.format(name="cli_sampler"))
    assert main(["plugins", "--kind", "sampler", "--plugins", str(path)]) == 0
    entries = _entries(capsys.readouterr().out)
    assert entries["cli_sampler"] == str(path.resolve())


def test_cli_plugins_bad_kind_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--kind", "samplers"])
    assert info.value.code == 2


def test_cli_plugins_duplicate_is_one_line_error(capsys, tmp_path):
    path = _write(tmp_path, "cli_dup.py", GOOD_SAMPLER.format(name="one_step"))
    assert main(["plugins", "--plugins", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "one_step" in err


def test_params_must_be_a_pydantic_model(tmp_path):
    path = _write(
        tmp_path,
        "badparams.py",
        """
        from ablate import Sampler, hookimpl

        class P(Sampler):
            name = "p"

            class Params:
                pass

        @hookimpl
        def ablate_samplers():
            return [P]
        """,
    )
    with pytest.raises(ablate.PluginError, match="Params"):
        ablate.load_registry([path])


# --------------------------------------------------------------------------- third-party entry points


def _fake_entry_points(monkeypatch, tmp_path):
    """The real entry points of group 'ablate' plus two third-party ones: a working and a broken one."""
    import importlib.util
    from importlib.metadata import entry_points as real_entry_points
    from types import SimpleNamespace

    import ablate.plugins as plugins_module

    path = _write(tmp_path, "tp_module.py", GOOD_SAMPLER.format(name="third_party_sampler"))
    spec = importlib.util.spec_from_file_location("tp_module_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def broken_load():
        raise ImportError("missing dependency of the broken package")

    good = SimpleNamespace(name="tp_good", dist=SimpleNamespace(name="tp-good", version="1.2"), load=lambda: module)
    bad = SimpleNamespace(name="tp_bad", dist=SimpleNamespace(name="tp-bad", version="0.1"), load=broken_load)

    def fake(group):
        return [*real_entry_points(group=group), good, bad]

    monkeypatch.setattr(plugins_module, "entry_points", fake)


def test_third_party_plugins_are_skipped_when_env_is_empty(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path)
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", "")
    registry = ablate.load_registry()
    assert registry.problems == []
    assert "third_party_sampler" not in registry.names("sampler")
    assert STANDARD["sampler"] <= set(registry.names("sampler"))


def test_broken_third_party_entry_point_is_a_warning(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path)
    monkeypatch.delenv("ABLATE_LOAD_PLUGINS", raising=False)
    with pytest.warns(UserWarning, match="tp-bad"):
        registry = ablate.load_registry()
    assert len(registry.problems) == 1 and "missing dependency" in registry.problems[0]
    assert str(registry.origin("sampler", "third_party_sampler")) == "tp-good 1.2"
    for kind, names in STANDARD.items():
        assert names <= set(registry.names(kind))


def test_env_selects_third_party_plugins_by_distribution(monkeypatch, tmp_path):
    _fake_entry_points(monkeypatch, tmp_path)
    monkeypatch.setenv("ABLATE_LOAD_PLUGINS", "tp-good")
    registry = ablate.load_registry()
    assert registry.problems == []
    assert "third_party_sampler" in registry.names("sampler")


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ablate {ablate.__version__}"


# --------------------------------------------------------------------------- Params defaults checked at load

PARAMS_SAMPLER = '''
from typing import Annotated, Any

from pydantic import Field, model_validator

from ablate import Sampler, hookimpl


class WithParams(Sampler):
    """A sampler whose Params are the test's."""

    name = "{name}"

    class Params(Sampler.Params):
{fields}

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x


@hookimpl
def ablate_samplers():
    return [WithParams]
'''


def _params_sampler(tmp_path, name, fields):
    text = PARAMS_SAMPLER.format(name=name, fields=textwrap.indent(textwrap.dedent(fields).strip(), " " * 8))
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("fields, parameter", [
    ("steps: int = Field(0, ge=1)", "parameter `steps` = 0: Input should be greater than or equal to 1"),
    ("mode: str = Field(3)", "parameter `mode` = 3: Input should be a valid string"),
    ("sizes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [1, -2])",
     "parameter `sizes.1` = -2: Input should be greater than or equal to 0"),
    ("""
     lo: float = 2.0
     hi: float = 1.0

     @model_validator(mode="after")
     def ordered(self) -> Any:
         if self.lo > self.hi:
             raise ValueError("lo must not exceed hi")
         return self
     """, "lo must not exceed hi"),
])
def test_an_invalid_default_is_a_broken_plugin_naming_origin_and_parameter(tmp_path, fields, parameter):
    path = _params_sampler(tmp_path, "bad_default", fields)
    with pytest.raises(ablate.PluginError) as info:  # a file the user named: an error
        ablate.load_registry([path])
    message = str(info.value)
    assert str(path.resolve()) in message and "sampler 'bad_default'" in message and "invalid default" in message
    assert parameter in message
    good = _write(tmp_path, "good3.py", GOOD_SAMPLER.format(name="good_three"))
    with pytest.warns(UserWarning, match="invalid default"):  # not strict: the others still load
        registry = ablate.load_registry([path, good], strict_files=False)
    assert registry.problems == [message]
    assert "good_three" in registry.names("sampler") and STANDARD["sampler"] <= set(registry.names("sampler"))
    assert "bad_default" not in registry.names("sampler")
    with pytest.raises(ablate.PluginError, match=r"sampler 'bad_default' cannot be used: .*invalid default"):
        registry.get("sampler", "bad_default")


def test_required_params_and_valid_defaults_load(tmp_path):
    """A required parameter (no default) is the study's to give, not a bad default."""
    path = _params_sampler(tmp_path, "needs_path", 'path: str = Field(..., description="required")\nsteps: int = Field(5, ge=1)')
    registry = ablate.load_registry([path])
    assert registry.problems == [] and "needs_path" in registry.names("sampler")
    assert registry.create("sampler", "needs_path", {"path": "x"}).params.steps == 5
    with pytest.raises(ValidationError, match="path"):
        registry.create("sampler", "needs_path")

