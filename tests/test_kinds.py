"""Adding a plugin kind from outside the core: a row in the kinds table (`ablate.interfaces.KINDS`) is
all the registry, the hookspecs, `ablate plugins`, the study schema, provenance and `Parts` need.

Two kinds are declared here as docs/writing-a-plugin.md's "Adding a kind" says: `guidance`, a list
section evaluated beside the samplers, and `noise`, a one-table section that is part of a training cell.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from ablate import AblateError, Plugin, StudyError, load_registry
from ablate.cell import Parts
from ablate.cli import main
from ablate.interfaces import KINDS, Kind
from ablate.provenance import cell_plugins, plugin_provenance
from ablate.study import load_study


class Guidance(Plugin):
    """Rescales the predicted noise at sampling time."""

    kind = "guidance"
    required = ("guide",)

    def guide(self, eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Noise(Plugin):
    """The forward process's noise distribution."""

    kind = "noise"
    required = ("draw",)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0, description="standard deviation of the noise")

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


PLUGINS = '''
import torch
from pydantic import BaseModel, ConfigDict, Field

from ablate import hookimpl
from ablate.interfaces import KINDS

Guidance, Noise = KINDS["guidance"].base, KINDS["noise"].base


class Constant(Guidance):
    """Multiplies eps_hat by a constant."""

    name = "constant"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0, description="the factor on eps_hat")

    def guide(self, eps):
        return eps * self.params.scale


class Gaussian(Noise):
    """Isotropic Gaussian noise."""

    name = "gaussian"

    def draw(self, shape, generator):
        return torch.randn(shape, generator=generator) * self.params.scale


@hookimpl
def ablate_guidances():
    return [Constant]


@hookimpl
def ablate_noises():
    return [Gaussian]
'''

STUDY = """
plugins = ["./kind_plugins.py"]

[study]
name = "new_kinds"

[data]
name = "gmm2d"

[model]
name = "mlp"

[grid]
noise = [{{ name = "gaussian" }}, {{ name = "gaussian", scale = 0.5 }}]

[[guidance]]
name = "constant"
scale = {scale}
"""


@pytest.fixture
def new_kinds(monkeypatch):
    """The two rows a contributor adds to KINDS, removed again after the test."""
    monkeypatch.setitem(KINDS, "guidance", Kind(Guidance, "ablate_guidances", "Guidance: ``guide(eps)``.",
                                                "guidance", many=True, default=[]))
    monkeypatch.setitem(KINDS, "noise", Kind(Noise, "ablate_noises", "Noise: ``draw(shape, generator)``.",
                                             "noise", cell=True, default={"name": "gaussian"}))


def write(tmp_path: Path, scale: object = 2.0) -> Path:
    (tmp_path / "kind_plugins.py").write_text(PLUGINS)
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(scale=scale))
    return study


def test_a_new_kind_is_registered_from_its_row_and_its_hook(new_kinds, tmp_path):
    write(tmp_path)
    registry = load_registry([tmp_path / "kind_plugins.py"])
    assert registry.names("guidance") == ["constant"] and registry.names("noise") == ["gaussian"]
    constant = registry.create("guidance", "constant", {"scale": 3.0})
    assert torch.equal(constant.guide(torch.ones(2)), torch.full((2,), 3.0))
    assert registry.origin("guidance", "constant").label == str((tmp_path / "kind_plugins.py").resolve())
    with pytest.raises(AblateError, match="unknown guidance 'constnat'.*did you mean 'constant'"):
        registry.get("guidance", "constnat")


def test_a_plugin_of_a_new_kind_missing_its_required_method_is_rejected(new_kinds, tmp_path):
    path = tmp_path / "partial.py"
    path.write_text("from ablate import hookimpl\nfrom ablate.interfaces import KINDS\n\n\n"
                    "class Partial(KINDS['guidance'].base):\n    name = 'partial'\n\n\n"
                    "@hookimpl\ndef ablate_guidances():\n    return [Partial]\n")
    with pytest.raises(AblateError, match="Partial does not define `guide`"):
        load_registry([path])


def test_ablate_plugins_lists_a_new_kind(new_kinds, tmp_path, capsys):
    write(tmp_path)
    assert main(["plugins", "--kind", "guidance", "--plugins", str(tmp_path / "kind_plugins.py")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "guidances:"
    assert "constant  [" in out and "Multiplies eps_hat by a constant." in out and "scale = 1.0  the factor on eps_hat" in out
    assert main(["plugins", "--plugins", str(tmp_path / "kind_plugins.py")]) == 0
    assert {"guidances:", "noises:", "samplers:"} <= set(capsys.readouterr().out.splitlines())


def test_a_study_accepts_the_sections_of_new_kinds(new_kinds, tmp_path):
    study = load_study(write(tmp_path))
    assert study.sections["guidance"] == [{"name": "constant", "scale": 2.0}]
    # a cell kind is part of every cell's config, its key and its Parts; the grid varies it like any section
    assert [c.config["noise"] for c in study.cells] == [{"name": "gaussian", "scale": 1.0}, {"name": "gaussian", "scale": 0.5}]
    assert [c.arm for c in study.cells] == ["gaussian", "gaussian(scale=0.5)"]
    assert len({c.key for c in study.cells}) == 2
    assert Parts.from_config(study.registry, study.cells[1].config).noise.params.scale == 0.5
    digest = hashlib.sha256((tmp_path / "kind_plugins.py").read_bytes()).hexdigest()
    assert cell_plugins(study, study.cells[0])["noise/gaussian"].endswith(f"sha256:{digest}")
    provenance = plugin_provenance(study)
    assert provenance["guidance/constant"] == provenance["noise/gaussian"] and "sampler/ancestral" in provenance


def test_a_new_kinds_params_are_validated_with_the_study(new_kinds, tmp_path):
    with pytest.raises(StudyError) as info:
        load_study(write(tmp_path, scale=-1))
    assert "guidance[0].scale: Input should be greater than 0 (got -1)" in str(info.value)


def test_without_its_row_the_section_is_an_unknown_key(tmp_path):
    """The control: the same study is rejected when the kinds table does not declare `guidance`."""
    study = write(tmp_path)
    study.write_text(textwrap.dedent(STUDY.format(scale=2.0)).replace('plugins = ["./kind_plugins.py"]\n', "")
                     .split("[grid]")[0] + '[[guidance]]\nname = "constant"\n')
    with pytest.raises(StudyError, match="guidance: unknown key"):
        load_study(study)
