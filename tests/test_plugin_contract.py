"""What a plugin class must and may define: required methods are checked when it loads, optional ones
are not, the documented lists match the base classes, and a plugin's `check` rejects a study early.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ablate
from ablate import AblateError, PluginError
from ablate.interfaces import KINDS
from ablate.plugins import implements
from ablate.study import load_study
from studies import TINY, merged, plugin, write_study

DOCS = Path(__file__).parents[1] / "docs" / "writing-a-plugin.md"


def documented_methods() -> dict[str, tuple[list[str], list[str]]]:
    """kind -> (required, optional) from the table under 'Required and optional methods'."""
    section = DOCS.read_text().split("### Required and optional methods", 1)[1].split("\n\n- ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (.+?) \| (.+?) \|$", section, re.M)
    names = lambda cell: re.findall(r"`(\w+)`", cell)  # noqa: E731
    return {kind: (names(req), names(opt)) for kind, req, opt in rows if kind != "kind"}


def test_documented_methods_match_the_base_classes():
    documented = documented_methods()
    assert set(documented) == set(KINDS)
    for kind, row in KINDS.items():
        assert documented[kind] == (list(row.base.required), list(row.base.optional)), kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_declared_methods_exist_on_the_base(kind):
    base = KINDS[kind].base
    for method in (*base.required, *base.optional):
        assert callable(getattr(base, method)), (kind, method)
    assert not set(base.required) & set(base.optional)


def plugin_file(tmp_path: Path, kind: str, leave_out: str | None) -> Path:
    """A local file with one plugin of `kind` that defines every required method but `leave_out`."""
    base = KINDS[kind].base.__name__
    methods = "".join(f"\n    def {m}(self, *args, **kwargs):\n        raise AssertionError('not called')\n"
                      for m in KINDS[kind].base.required if m != leave_out)
    path = tmp_path / f"{kind}_plugin.py"
    path.write_text(f"from ablate import {base}, hookimpl\n\n\nclass Partial({base}):\n    name = 'partial'\n{methods}"
                    f"\n\n@hookimpl\ndef {KINDS[kind].hook}():\n    return [Partial]\n")
    return path


REQUIRED = [(kind, method) for kind in sorted(KINDS) for method in KINDS[kind].base.required]


@pytest.mark.parametrize(("kind", "method"), REQUIRED, ids=[f"{k}.{m}" for k, m in REQUIRED])
def test_a_plugin_missing_a_required_method_is_rejected_when_it_loads(tmp_path, kind, method):
    path = plugin_file(tmp_path, kind, leave_out=method)
    with pytest.raises(PluginError) as info:
        ablate.load_registry([path])
    message = str(info.value)
    assert str(path.resolve()) in message and "Partial" in message and f"`{method}`" in message, message


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_plugin_with_every_required_method_and_no_optional_one_loads(tmp_path, kind):
    """The control of the test above, and optional methods are optional; `Params` may be inherited."""
    registry = ablate.load_registry([plugin_file(tmp_path, kind, leave_out=None)])
    cls = registry.get(kind, "partial")
    assert cls.Params is KINDS[kind].base.Params
    assert not any(implements(cls, m) for m in KINDS[kind].base.optional)


def test_implements_sees_inherited_implementations_but_not_the_base_placeholder():
    registry = ablate.load_registry()
    ancestral = registry.get("sampler", "ancestral")
    assert implements(ancestral, "sample") and implements(ancestral, "nfe")
    assert implements(type("Sub", (ancestral,), {}), "sample")  # a subclass of a plugin inherits its methods
    assert not implements(ancestral, "check") and implements(registry.get("sampler", "one_step"), "check")
    assert not implements(type("Bare", (ablate.Sampler,), {"name": "bare"}), "sample")


SAMPLER_WITHOUT_NFE = plugin('''
from ablate import Sampler


class JustSample(Sampler):
    """Returns the denoiser's x0 estimate at t_start: one evaluation, and no `nfe` to say so."""

    name = "just_sample"

    def sample(self, denoiser, diffusion, x, t_start, generator):
        import torch

        return denoiser(x, torch.full((x.shape[0],), t_start, dtype=torch.long)).x0
''', ablate_samplers=["JustSample"])

# the exact oracle of gmm2d (nothing to train) sampled by the plugin file's sampler
CONTRACT = merged(TINY, {"study": {"name": "contract", "seeds": None}, "model": {"name": "gmm_oracle"}, "schedule": {"T": 100},
                         "train": None, "eval": {"batch_size": 50}, "sampler": [{"name": "just_sample"}]})


def test_a_sampler_without_nfe_validates_and_its_nfe_is_unknown(tmp_path):
    study = load_study(write_study(tmp_path, base=CONTRACT, plugin_files={"mine.py": SAMPLER_WITHOUT_NFE}))
    sampler = study.registry.from_table("sampler", study.samplers[0])
    assert sampler.nfe(None, 99) is None  # type: ignore[arg-type]


def test_a_sampler_without_nfe_runs_and_the_core_counts_its_evaluations(tmp_path, capsys):
    study = write_study(tmp_path, base=CONTRACT, plugin_files={"mine.py": SAMPLER_WITHOUT_NFE})
    frame = ablate.run_study(study, runs_dir=tmp_path / "runs", progress=True)  # the bar has no total
    assert "Traceback" not in capsys.readouterr().err
    rows = frame[frame.sampler == "just_sample"]
    assert len(rows) and set(rows.nfe) == {1}  # 2 batches of 50, one evaluation each


CHECKING = plugin('''
from pydantic import Field

from ablate import AblateError, Metric, Sampler


class Strided(Sampler):
    name = "strided"

    class Params(Sampler.Params):
        stride: int = Field(1, ge=1)

    def sample(self, denoiser, diffusion, x, t_start, generator):
        return x

    def check(self, diffusion):
        if diffusion.T % self.params.stride:
            raise AblateError(f"must divide T = {diffusion.T}", key="stride")


class Picky(Metric):
    name = "picky"

    def evaluate(self, samples, real, ctx):
        return {}

    def check(self, spec):
        if spec.shape != (2,):
            raise AblateError(f"only 2-D points, not {spec.shape}")
''', ablate_samplers=["Strided"], ablate_metrics=["Picky"])


def checking_study(tmp_path: Path, sampler: dict, metric: dict, **tables) -> Path:
    """The contract study with ancestral and `sampler`, gmm_fit and `metric`, beside the checking plugins."""
    return write_study(tmp_path, base=CONTRACT, plugin_files={"mine.py": CHECKING}, sampler=[{"name": "ancestral"}, sampler],
                       metric=[*CONTRACT["metric"], metric], **tables)


def test_plugin_checks_run_for_every_schedule_and_dataset_of_the_grid(tmp_path):
    grid = {"schedule": [{"name": "linear", "T": 100}, {"name": "linear", "T": 50}, {"name": "cosine", "T": 30}],
            "data": [{"name": "gmm2d", "n_train": 200, "n_test": 100}, {"name": "digits"}]}
    path = checking_study(tmp_path, {"name": "strided", "stride": 20}, {"name": "picky"}, grid=grid)
    with pytest.raises(AblateError) as info:
        load_study(path)
    lines = str(info.value).splitlines()[1:]
    # T = 100 is divisible by 20; 50 and 30 are not; each problem once, however many cells share it
    assert sorted(line.strip() for line in lines) == sorted([
        "sampler[1].stride: must divide T = 50", "sampler[1].stride: must divide T = 30",
        "metric[1]: only 2-D points, not (1, 8, 8)", "metric[0]: gmm_fit needs a dataset with a known mixture "
        "(e.g. gmm2d); 'digits' has none"])


def test_plugin_checks_pass_a_study_they_accept(tmp_path):
    path = checking_study(tmp_path, {"name": "strided", "stride": 25}, {"name": "picky"})
    study = load_study(path)
    assert [s["name"] for s in study.samplers] == ["ancestral", "strided"]
