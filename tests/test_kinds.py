"""Adding a plugin kind from outside the core: a row in the kinds table (`ablate.interfaces.KINDS`) is
all the registry, the hookspecs, `ablate plugins`, the study schema, provenance, `Parts` and the
exports of `ablate` need; nothing else in the core or the tests lists kinds.

Two kinds are declared here as docs/writing-a-plugin.md's "Adding a kind" says (named apart from that
page's own example, `guidance`): `probe`, a list section evaluated beside the samplers, and `prior`, a
one-table section that is part of a training cell. A cell kind with a neutral default (`neutral=True`)
leaves every existing cell's key where it was; without it, every key moves.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from test_neutral_params import EXPECTED, FROZEN, frozen_cells

import ablate
from ablate import AblateError, Plugin, StudyError, load_registry
from ablate.cell import Parts
from ablate.cli import main
from ablate.interfaces import KINDS, Kind
from ablate.provenance import cell_plugins, plugin_provenance
from ablate.study import load_study
from studies import plugin, study_text, write_study


class Probe(Plugin):
    """Looks at samples beside the metrics."""

    kind = "probe"
    required = ("inspect",)

    def inspect(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Prior(Plugin):
    """The distribution sampling starts from."""

    kind = "prior"
    required = ("draw",)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0, description="standard deviation of the noise")

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


PROBES = plugin('''
from pydantic import BaseModel, ConfigDict, Field

from ablate import Probe  # the kind's base class, exported by `ablate` from its row


class Scaled(Probe):
    """Multiplies the samples by a constant."""

    name = "scaled"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0, description="the factor on the samples")

    def inspect(self, x):
        return x * self.params.scale
''', ablate_probes=["Scaled"])
PRIORS = plugin('''
import torch

from ablate import Prior


class Gaussian(Prior):
    """Isotropic Gaussian noise."""

    name = "gaussian"

    def draw(self, shape, generator):
        return torch.randn(shape, generator=generator) * self.params.scale
''', ablate_priors=["Gaussian"])
PLUGINS = {"probes.py": PROBES, "priors.py": PRIORS}
PRIOR_GRID = {"prior": [{"name": "gaussian"}, {"name": "gaussian", "scale": 0.5}]}


def prior_kind(neutral: bool = False) -> Kind:
    return Kind(Prior, "ablate_priors", "Priors: ``draw(shape, generator)``.", "prior", cell=True,
                default={"name": "gaussian"}, neutral=neutral)


@pytest.fixture
def new_kinds(monkeypatch):
    """The two rows a contributor adds to KINDS, removed again after the test."""
    monkeypatch.setitem(KINDS, "probe", Kind(Probe, "ablate_probes", "Probes: ``inspect(x)``.", "probe", many=True,
                                             default=[]))
    monkeypatch.setitem(KINDS, "prior", prior_kind())


def write(tmp_path: Path, scale: object = 2.0, **tables) -> Path:
    return write_study(tmp_path, plugin_files=PLUGINS, probe=[{"name": "scaled", "scale": scale}],
                       **{"grid": PRIOR_GRID, **tables})


def test_a_new_kind_is_registered_from_its_row_and_its_hook(new_kinds, tmp_path):
    write(tmp_path)
    registry = load_registry([tmp_path / "probes.py", tmp_path / "priors.py"])
    assert registry.names("probe") == ["scaled"] and registry.names("prior") == ["gaussian"]
    scaled = registry.create("probe", "scaled", {"scale": 3.0})
    assert torch.equal(scaled.inspect(torch.ones(2)), torch.full((2,), 3.0))
    assert registry.origin("probe", "scaled").label == str((tmp_path / "probes.py").resolve())
    with pytest.raises(AblateError, match="unknown probe 'scaeld'.*did you mean 'scaled'"):
        registry.get("probe", "scaeld")


def test_a_kind_with_no_plugin_loaded_says_how_to_load_its_entry_point(new_kinds):
    with pytest.raises(AblateError, match=r"unknown probe 'none': no probe plugin is loaded; .*`pip install -e \.` again"):
        load_registry().get("probe", "none")


def test_ablate_exports_the_base_class_of_each_row(new_kinds):
    assert ablate.Probe is Probe and ablate.Prior is Prior and {"Probe", "Prior", "Sampler"} <= set(ablate.__all__)


def test_a_plugin_of_a_new_kind_missing_its_required_method_is_rejected(new_kinds, tmp_path):
    path = tmp_path / "partial.py"
    path.write_text(plugin("from ablate import Probe\n\n\nclass Partial(Probe):\n    name = 'partial'\n",
                           ablate_probes=["Partial"]))
    with pytest.raises(AblateError, match="Partial does not define `inspect`"):
        load_registry([path])


def test_ablate_plugins_lists_a_new_kind(new_kinds, tmp_path, capsys):
    write(tmp_path)
    assert main(["plugins", "--kind", "probe", "--plugins", str(tmp_path / "probes.py")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "probes:"
    assert "scaled  [" in out and "Multiplies the samples by a constant." in out and "scale = 1.0  the factor on the samples" in out
    assert main(["plugins", "--plugins", str(tmp_path / "probes.py"), "--plugins", str(tmp_path / "priors.py")]) == 0
    assert {"probes:", "priors:", "samplers:"} <= set(capsys.readouterr().out.splitlines())


def test_a_study_accepts_the_sections_of_new_kinds(new_kinds, tmp_path):
    study = load_study(write(tmp_path))
    assert study.sections["probe"] == [{"name": "scaled", "scale": 2.0}]
    # a cell kind is part of every cell's config, its key and its Parts; the grid varies it like any section
    assert [c.config["prior"] for c in study.cells] == [{"name": "gaussian", "scale": 1.0}, {"name": "gaussian", "scale": 0.5}]
    assert [c.arm for c in study.cells] == ["gaussian", "gaussian(scale=0.5)"]
    assert len({c.key for c in study.cells}) == 2
    assert Parts.from_config(study.registry, study.cells[1].config).prior.params.scale == 0.5
    digest = hashlib.sha256((tmp_path / "priors.py").read_bytes()).hexdigest()
    assert cell_plugins(study, study.cells[0])["prior/gaussian"].endswith(f"sha256:{digest}")
    provenance = plugin_provenance(study)
    assert provenance["prior/gaussian"] == cell_plugins(study, study.cells[0])["prior/gaussian"]
    assert provenance["probe/scaled"].endswith(hashlib.sha256((tmp_path / "probes.py").read_bytes()).hexdigest())
    assert "sampler/ancestral" in provenance


def test_a_new_kinds_params_are_validated_with_the_study(new_kinds, tmp_path):
    with pytest.raises(StudyError) as info:
        load_study(write(tmp_path, scale=-1))
    assert "probe[0].scale: Input should be greater than 0 (got -1)" in str(info.value)


def test_without_its_row_the_section_is_an_unknown_key_and_no_export(tmp_path):
    """The control: the same study is rejected when the kinds table does not declare `probe`."""
    study = write_study(tmp_path, probe=[{"name": "scaled"}])
    with pytest.raises(StudyError, match="probe: unknown key"):
        load_study(study)
    assert not hasattr(ablate, "Probe") and "Probe" not in ablate.__all__


# --- a cell kind added later: its neutral default keeps every stored cell's key -------------------------

def keys(tmp_path: Path, **tables) -> list[str]:
    folder = tmp_path / hashlib.sha256(study_text(**tables).encode()).hexdigest()[:12]
    study = write_study(folder, plugin_files={"priors.py": PRIORS} if "prior" in KINDS else None, grid={"target": [{"name": "epsilon"}, {"name": "x0"}]},
                        study={"seeds": [0, 1]}, **tables)
    return [c.key for c in load_study(study).cells]


def test_a_neutral_cell_kind_moves_no_key_until_a_study_changes_it(monkeypatch, tmp_path):
    before = keys(tmp_path)
    monkeypatch.setitem(KINDS, "prior", prior_kind(neutral=True))
    assert keys(tmp_path) == before  # the section left out: its default
    assert keys(tmp_path, prior={"name": "gaussian", "scale": 1.0}) == before  # written at its default: the same cells
    moved = keys(tmp_path, prior={"name": "gaussian", "scale": 0.5})
    assert len(set(moved)) == 4 and not set(moved) & set(before)


def test_a_cell_kind_without_a_neutral_default_moves_every_key(monkeypatch, tmp_path):
    """The control: the same row without `neutral` puts its default table into every key."""
    before = keys(tmp_path)
    monkeypatch.setitem(KINDS, "prior", prior_kind(neutral=False))
    assert len(set(keys(tmp_path))) == 4 and not set(keys(tmp_path)) & set(before)


def test_a_neutral_cell_kind_keeps_every_0_1_key(monkeypatch, tmp_path):
    """Every cell of every frozen 0.1.0 study and profile (tests/test_neutral_params.py) keeps its key."""
    (tmp_path / "priors.py").write_text(PRIORS)
    monkeypatch.setitem(KINDS, "prior", prior_kind(neutral=True))
    assert frozen_cells([tmp_path / "priors.py"]) == EXPECTED
    first = load_study(next(FROZEN.glob("*.toml")), extra_plugins=[tmp_path / "priors.py"]).cells[0]
    assert first.config["prior"] == {"name": "gaussian", "scale": 1.0}  # in the config, not in the key
    monkeypatch.setitem(KINDS, "prior", prior_kind(neutral=False))
    moved = frozen_cells([tmp_path / "priors.py"])
    assert not {k for cells in moved.values() for *_, k in cells} & {k for cells in EXPECTED.values() for *_, k in cells}


def test_the_docs_example_row_is_a_valid_kind():
    """docs/writing-a-plugin.md's "Adding a kind" declares `guidance` as written there (not registered)."""
    section = (Path(__file__).parents[1] / "docs" / "writing-a-plugin.md").read_text().split("## 7. Adding a kind")[1]
    block = ast.parse(section.split("```python\n")[1].split("```")[0])
    row = block.body.pop()  # the `Kind(...),` row, after the base class
    namespace = {"Plugin": Plugin, "Kind": Kind}
    exec(compile(block, "writing-a-plugin.md", "exec"), namespace)
    row = eval(compile(ast.Expression(row.value), "writing-a-plugin.md", "eval"), namespace)
    assert row[0].name == "guidance" and row[0].cell and row[0].neutral and row[0].default == {"name": "none"}


def test_neutral_needs_a_cell_kind_with_a_default_table():
    with pytest.raises(ValueError, match="neutral=True needs cell=True and a default table"):
        Kind(Probe, "ablate_probes", "Probes.", "probe", many=True, default=[], neutral=True)
