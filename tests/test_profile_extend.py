"""Profiles extend lists (`"arm+" = [...]`) as well as replace them, so no list is spelled out twice."""

from __future__ import annotations

import pytest

from ablate.errors import StudyError
from ablate.overrides import apply_overrides


def test_plus_appends_to_the_base_list_after_replacements() -> None:
    raw = {"contrast": [{"name": "a"}], "arm": [{"x": 1}]}
    apply_overrides(raw, {"contrast+": [{"name": "b"}], "arm+": {"x": 2}}, "s.toml", "profile 'cpu'")
    assert raw["contrast"] == [{"name": "a"}, {"name": "b"}]
    assert raw["arm"] == [{"x": 1}, {"x": 2}]
    replaced = {"arm": [{"x": 1}]}
    apply_overrides(replaced, {"arm+": [{"x": 3}], "arm": [{"x": 2}]}, "s.toml", "profile 'cpu'")
    assert replaced["arm"] == [{"x": 2}, {"x": 3}]  # the replacement first, whatever the order written


def test_plus_on_a_missing_key_starts_a_list_and_on_a_value_is_an_error() -> None:
    raw: dict = {"train": {"steps": 3}}
    apply_overrides(raw, {"eval.at_steps+": [10]}, "s.toml", "--set")
    assert raw["eval"]["at_steps"] == [10]
    with pytest.raises(StudyError, match=r"train.steps is not a list; `steps\+` appends to a list"):
        apply_overrides(raw, {"train.steps+": [1]}, "s.toml", "--set")


def test_a_profile_replaces_the_grid_whole_so_its_dotted_axes_survive() -> None:
    from ablate.overrides import flatten

    profile = {"grid": {"data.D": [2, 512], "target": [{"name": "x0"}]}, "train": {"steps": 3}}
    assert flatten(profile) == {"grid": {"data.D": [2, 512], "target": [{"name": "x0"}]}, "train.steps": 3}
