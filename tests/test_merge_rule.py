"""One merge rule for plugin tables in `[grid]` and `[[arm]]` (docs/study-format.md, "Plugin tables"):
the base table's plugin name overrides only the keys given, another name starts from its own defaults
with a note naming the dropped base params, and arm labels never hide a parameter that differs.
"""

from __future__ import annotations

import sqlite3
import warnings
from contextlib import closing
from pathlib import Path

import pytest

from ablate.errors import StudyNote
from ablate.study import Study, load_study
from studies import run, study_text

BASE = study_text(study={"name": "merge_rule"}, data={"n_modes": 3}, model={"depth": 2}, schedule={"T": 200},
                  train={"steps": 2, "batch_size": 32}, sampler=None)  # the text each test appends its axes to


def load(tmp_path: Path, axes: str, base: str = BASE) -> tuple[Study, list[str]]:
    """The study with `axes` appended, and the notes its load gave."""
    path = tmp_path / "study.toml"
    path.write_text(base + axes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(path)
    return study, [str(w.message) for w in caught if issubclass(w.category, StudyNote)]


def by_arm(study: Study, section: str) -> dict[str, dict]:
    return {c.arm: c.config[section] for c in study.cells}


def test_the_same_name_keeps_the_base_params_and_another_name_starts_from_its_defaults(tmp_path):
    """The issue's case: with [schedule] T = 200, the `linear` option used to run at T = 1000, labelled `linear`."""
    study, notes = load(tmp_path, '[grid]\nschedule = [{ name = "linear" }, { name = "cosine" }]\n')
    schedules = by_arm(study, "schedule")
    assert list(schedules) == ["linear(T=200)", "cosine(T=1000)"]  # T differs between the arms: both say it
    assert schedules["linear(T=200)"]["T"] == 200
    assert schedules["cosine(T=1000)"] == {"name": "cosine", "T": 1000, "s": 0.008, "max_beta": 0.999}  # its defaults
    assert notes == [f"{tmp_path / 'study.toml'}: grid.schedule[1]: schedule 'cosine' starts from its own "
                     "defaults; the base [schedule] parameters of 'linear' are not used: T=200"]


def test_the_same_name_overrides_only_the_keys_it_gives(tmp_path):
    study, notes = load(tmp_path, """
[[arm]]
model = { name = "mlp", depth = 4 }

[[arm]]
schedule = { name = "linear", beta_end = 0.03 }
""")
    models, schedules = by_arm(study, "model"), by_arm(study, "schedule")
    assert list(models) == ["mlp(hidden=16, depth=4)", "linear(T=200, beta_end=0.03)"]
    assert models["mlp(hidden=16, depth=4)"]["hidden"] == 16 and models["mlp(hidden=16, depth=4)"]["depth"] == 4
    assert schedules["linear(T=200, beta_end=0.03)"]["T"] == 200 and schedules["linear(T=200, beta_end=0.03)"]["beta_end"] == 0.03
    assert notes == []  # nothing was dropped


def test_a_switch_that_drops_nothing_gives_no_note(tmp_path):
    """Only the params the base table gives are reported: `target` has none, so switching it says nothing."""
    study, notes = load(tmp_path, '[grid]\ntarget = [{ name = "epsilon" }, { name = "x0" }]\n')
    assert [c.arm for c in study.cells] == ["epsilon", "x0"] and notes == []


def test_one_note_per_switch_however_many_arms_make_it(tmp_path):
    _, notes = load(tmp_path, """
[[arm]]
model = { name = "gmm_oracle" }
target = { name = "epsilon" }

[[arm]]
model = { name = "gmm_oracle" }
target = { name = "x0" }

[[arm]]
"model.name" = "gmm_oracle"
target = { name = "v" }
""")
    assert notes == [f"{tmp_path / 'study.toml'}: arm[0].model, arm[1].model, arm[2].model.name: model 'gmm_oracle' "
                     "starts from its own defaults; the base [model] parameters of 'mlp' are not used: hidden=16, depth=2"]


@pytest.mark.parametrize("base_T, options, labels, Ts", [
    (1000, '[{ name = "linear", T = 200 }, { name = "linear" }]', ["linear(T=200)", "linear"], [200, 1000]),
    (200, '[{ name = "linear" }, { name = "linear", T = 1000 }]', ["linear(T=200)", "linear"], [200, 1000]),
    (200, '[{ name = "linear", T = 1000 }, { name = "cosine", T = 1000 }]', ["linear", "cosine"], [1000, 1000]),  # equal T
    (200, '[{ name = "linear" }, { name = "cosine", T = 200 }]', ["linear(T=200)", "cosine(T=200)"], [200, 200]),
])
def test_arms_that_differ_never_look_alike(tmp_path, base_T, options, labels, Ts):
    study, _ = load(tmp_path, f"[grid]\nschedule = {options}\n", BASE.replace("T = 200\n", f"T = {base_T}\n"))
    assert [c.arm for c in study.cells] == labels
    assert [c.config["schedule"]["T"] for c in study.cells] == Ts


def test_dotted_params_land_on_whichever_table_the_cell_has(tmp_path):
    """Whole tables apply before dotted keys, whatever the axis order: T is set on linear and on cosine."""
    study, _ = load(tmp_path, '[grid]\n"schedule.T" = [50, 100]\nschedule = [{ name = "linear" }, { name = "cosine" }]\n')
    assert {(c.config["schedule"]["name"], c.config["schedule"]["T"]) for c in study.cells} == {
        ("linear", 50), ("linear", 100), ("cosine", 50), ("cosine", 100)}
    assert len({c.key for c in study.cells}) == 4


def test_the_note_is_printed_once_at_load_before_training(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(BASE + '[grid]\nschedule = [{ name = "linear" }, { name = "cosine" }]\n')
    assert run(path, tmp_path / "runs") == 0
    out, err = capsys.readouterr()
    assert err.count("note:") == 1 and err.startswith(f"note: {path}: grid.schedule[1]: schedule 'cosine'"), err
    with closing(sqlite3.connect(tmp_path / "runs" / "ablate.db")) as db:
        arms = [row[0] for row in db.execute("SELECT arm FROM run_cells ORDER BY arm")]
    assert arms == ["cosine(T=1000)", "linear(T=200)"]
