"""Neutral params: a Params field declared neutral leaves the cell key unchanged while it is at its
default, so adding one (data.train_half, mnist5k's size) never orphans a stored result.

tests/data/cell_keys.json holds the arm, seed and key of every cell of every study and profile of
ablate 0.1.0 (frozen in tests/data/studies_0_1/), written by the code before the first neutral param existed."""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path

from ablate.study import load_study
from studies import plugin, write_study

ROOT = Path(__file__).resolve().parent.parent
FROZEN = ROOT / "tests" / "data" / "studies_0_1"  # the studies as 0.1.0 ran them: results stored then
EXPECTED = json.loads((ROOT / "tests" / "data" / "cell_keys.json").read_text())


def frozen_cells(extra_plugins: list[Path] | tuple[Path, ...] = ()) -> dict[str, list[list]]:
    """'study.toml:profile' -> [arm, seed, key] of each cell of every frozen study and profile."""
    seen = {}
    for path in sorted(FROZEN.glob("*.toml")):
        for profile in [None, *tomllib.loads(path.read_text()).get("profiles", {})]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cells = load_study(path, profile, extra_plugins=extra_plugins).cells
            seen[f"{path.name}:{profile or ''}"] = [[c.arm, c.seed, c.key] for c in cells]
    return seen


def test_every_committed_study_keeps_its_cell_keys():
    seen = frozen_cells()
    assert seen.keys() == EXPECTED.keys()
    for name, cells in seen.items():
        assert cells == EXPECTED[name], name
    assert sum(len(c) for c in seen.values()) == 415


def test_builtin_neutral_params():
    from ablate.interfaces import Dataset, neutral_defaults
    from ablate.plugins import load_registry

    registry = load_registry()
    assert neutral_defaults(Dataset.Params) == {"train_half": None}
    assert neutral_defaults(registry.get("dataset", "mnist5k").Params) == {"train_half": None, "size": 28}
    assert neutral_defaults(registry.get("model", "unet").Params) == {}


PLUGIN = plugin('''
import torch
from pydantic import Field
from ablate import Data, Dataset, DataSpec
from ablate.interfaces import neutral

class Grow(Dataset):
    name = "grow"
    class Params(Dataset.Params):
        n: int = Field(8, description="points")
        {extra}
    def load(self):
        return Data(torch.zeros(self.params.n, 2), torch.zeros(2, 2), DataSpec(self.name, (2,)))
''', ablate_datasets=["Grow"])

def _keys(tmp_path, extra: str = "", data: dict | None = None, grid: dict | None = None) -> list[tuple[str, str]]:
    """(arm, key) of the cells of a two-target study on the `grow` dataset, its Params given `extra`."""
    folder = tmp_path / str(abs(hash((extra, str(data), str(grid)))))
    study = write_study(folder, base={}, plugin_files={"grow.py": PLUGIN.format(extra=extra)},
                        study={"name": "neutral", "seeds": [0, 1]}, data={"name": "grow", **(data or {})}, model={"name": "mlp"},
                        grid={"target": [{"name": "epsilon"}, {"name": "x0"}], **(grid or {})})
    return [(c.arm, c.key) for c in load_study(study).cells]


def test_a_neutral_param_added_to_a_plugin_moves_no_key(tmp_path):
    before = _keys(tmp_path)
    added = 'scale: float = neutral(1.0, description="a param added later")'
    assert _keys(tmp_path, added) == before
    assert _keys(tmp_path, added, data={"scale": 1.0}) == before  # written at its default: the same cell
    moved = _keys(tmp_path, added, data={"scale": 2.0})
    assert [a for a, _ in moved] == [a for a, _ in before]  # data is no axis: the labels stay
    assert not {k for _, k in moved} & {k for _, k in before}
    plain = _keys(tmp_path, 'scale: float = Field(1.0, description="not neutral")')
    assert not {k for _, k in plain} & {k for _, k in before}  # a plain field enters the key


def test_train_half_as_a_grid_axis(tmp_path):
    whole = _keys(tmp_path)
    halves = _keys(tmp_path, grid={"data.train_half": ["a", "b"]})
    assert [a for a, _ in halves] == [f"{t} + train_half={h}" for t in ("epsilon", "x0") for h in "ab" for _ in (0, 1)]
    assert len({k for _, k in halves}) == 8 and not {k for _, k in halves} & {k for _, k in whole}
