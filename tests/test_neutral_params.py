"""Neutral params: a Params field declared neutral leaves the cell key unchanged while it is at its
default, so adding one (data.train_half, mnist5k's size) never orphans a stored result.

tests/data/cell_keys.json holds the arm, seed and key of every cell of every committed study and
profile, written by the code before the first neutral param existed."""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path

import pytest

from ablate.study import load_study

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "tests" / "data" / "cell_keys.json").read_text())


def _cells(study_file: Path, profile: str | None) -> list[list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [[c.arm, c.seed, c.key] for c in load_study(study_file, profile).cells]


def test_every_committed_study_keeps_its_cell_keys():
    seen = {}
    for path in sorted((ROOT / "studies").glob("*.toml")):
        for profile in [None, *tomllib.loads(path.read_text()).get("profiles", {})]:
            seen[f"{path.name}:{profile or ''}"] = _cells(path, profile)
    assert seen.keys() == EXPECTED.keys()
    for name, cells in seen.items():
        assert cells == EXPECTED[name], name
    assert sum(len(c) for c in seen.values()) == 415
