"""Reference docs against the code: docs/study-format.md's example study loads, its [train]/[eval] blocks
and [eval] table give every setting with its real default, the bookkeeping settings are named, and the
README's Plugins table lists every built-in plugin."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ablate.interfaces import KINDS
from ablate.plugins import load_registry
from ablate.study import BOOKKEEPING, EvalConfig, TrainConfig, load_study

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "study-format.md"


def example() -> str:
    return DOC.read_text().split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_example_study_loads(tmp_path):
    """Every key, plugin parameter and contrast label the example shows exists (plugins = [...] names a
    file the reader writes, so it is left out)."""
    text = example()
    assert 'plugins = ["./my_sampler.py"]' in text
    path = tmp_path / "study.toml"
    path.write_text(text.replace('plugins = ["./my_sampler.py"]', ""))
    study = load_study(path)
    assert {c.arm for c in study.cells} >= {"x0 + lr=0.0002 + min_snr", "epsilon + lr=0.0002 + simple"}
    assert len(load_study(path, "quick").cells) == len(study.cells)


def test_train_and_eval_blocks_show_the_defaults():
    raw = tomllib.loads(example())
    assert raw["train"] == TrainConfig().model_dump()
    defaults = EvalConfig().model_dump()
    unset = [k for k, v in defaults.items() if v is None]  # TOML has no null: an unset default is a comment
    assert set(unset) == {"clip_x0", "curve_samples", "curve_sampler"}
    assert raw["eval"] == {k: v for k, v in defaults.items() if v is not None}
    for name in unset:
        assert re.search(rf"^# {name} = ", example(), re.M), name


def test_eval_table_lists_every_field_with_its_default():
    section = DOC.read_text().split("## Evaluation (`[eval]`)", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \| .+ \|$", section, re.M))
    assert set(rows) == set(EvalConfig.model_fields)
    for name, field in EvalConfig.model_fields.items():
        if field.default is None:
            assert rows[name].startswith("unset"), name
        else:
            shown = re.fullmatch(r"`(.+)`", rows[name])
            assert shown and tomllib.loads(f"v = {shown[1]}")["v"] == field.default, name


def test_bookkeeping_settings_are_named():
    cells = DOC.read_text().split("## Cells", 1)[1].split("\n## ", 1)[0]
    for name in BOOKKEEPING:
        assert f"`train.{name}`" in cells


def test_readme_plugins_table_lists_every_builtin():
    section = (ROOT / "README.md").read_text().split("## Plugins", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\w+) \| (.+) \|$", section, re.M))
    registry = load_registry()
    for kind in KINDS:
        builtin = [n for n in registry.names(kind) if registry.origin(kind, n).source == "built-in"]
        assert builtin, kind
        missing = [n for n in builtin if f"`{n}`" not in rows.get(kind, "")]
        assert not missing, f"README Plugins table, {kind}: missing {missing}"
