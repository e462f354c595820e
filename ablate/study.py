"""The study file: TOML read (ablate.studyfile), the profile and `--set` overrides applied (ablate.overrides),
validated against the schema and the plugins' own Params (ablate.schema), and expanded into training
cells (ablate.grid).

Every error names the file, the dotted key path and what was expected; the whole study is
validated before any training starts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ablate import grid
from ablate.contrast_spec import ContrastSpec, check, expand
from ablate.contrasts import ALPHA
from ablate.errors import AblateError, StudyError, StudyNote
from ablate.interfaces import KINDS, neutral_defaults
from ablate.overrides import apply_profile, apply_set, mark_set_errors
from ablate.plugins import Registry, config_hash, load_registry
from ablate.precheck import device_error, plugin_checks, warn_if_not_noise
from ablate.schema import (
    EvalConfig,
    TrainConfig,
    cell_sections,
    error_lines,
    plugin_sections,
    required_sections,
    study_model,
    validate_plugin,
)
from ablate.stats import sign_flip_min_seeds
from ablate.store import REAL_DATA
from ablate.studyfile import read_toml

__all__ = ["BOOKKEEPING", "Cell", "EvalConfig", "Study", "TrainConfig", "load_study"]  # what importers use

BOOKKEEPING = ("checkpoint_every", "log_every")  # train settings outside the cell key
NEUTRAL_TRAIN = {"lr_decay": "none"}  # settings added later: at this value they leave the cell key as it was


@dataclass
class Cell:
    """One training run: a resolved (data, model, schedule, target, weighting, train, seed) config."""

    config: dict[str, Any]
    arm: str
    seed: int
    neutral: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> its plugin's neutral params' defaults
    neutral_sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> its kind's neutral default

    @property
    def key(self) -> str:
        """The hash of the config without its bookkeeping: settings that cannot change the numbers
        (how often to checkpoint or log) reuse the cell instead of training the same model again; and
        without what was added later with the behaviour before as its default: neutral params at their
        defaults (ablate.interfaces.neutral), and the section of a neutral kind (Kind.neutral) equal to
        its default. Such an addition leaves the keys of the cells stored before it, and their results, in place."""
        config = {k: v for k, v in self.config.items() if k not in self.neutral_sections or self.neutral_sections[k] != v}
        config["train"] = {k: v for k, v in config["train"].items() if k not in BOOKKEEPING}
        for section, defaults in {**self.neutral, "train": NEUTRAL_TRAIN}.items():
            if section in config:
                config[section] = {k: v for k, v in config[section].items() if k not in defaults or defaults[k] != v}
        return config_hash(config)


@dataclass
class Study:
    path: Path
    name: str
    question: str
    profile: str | None
    raw: dict[str, Any]
    cells: list[Cell]
    eval: EvalConfig
    plugin_files: list[Path]
    registry: Registry
    contrasts: list[dict[str, Any]]
    sections: dict[str, Any]  # every plugin section, resolved: a table, or a list of them ([[section]])
    companions: dict[str, str] = field(default_factory=dict)  # label -> study shown beside this one in its report

    @property
    def samplers(self) -> list[dict[str, Any]]:
        return self.sections["sampler"]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.sections["metric"]

    @property
    def executor(self) -> dict[str, Any]:
        return self.sections["executor"]

    @executor.setter
    def executor(self, table: dict[str, Any]) -> None:
        self.sections["executor"] = table


def study_registry(path: Path, listed: list[str], extra_plugins: list[str] | tuple[str, ...]) -> tuple[Registry, list[Path]]:
    """The registry with the study's own plugin files (relative to it) and --plugins files loaded."""
    plugin_files = [(path.parent / p).resolve() for p in listed] + [Path(p).resolve() for p in extra_plugins]
    missing = [str(p) for p in plugin_files if not p.is_file()]
    if missing:
        raise StudyError(f"plugin file not found: {', '.join(missing)}", file=str(path), key="plugins")
    try:
        return load_registry(plugin_files), plugin_files
    except AblateError as exc:
        raise StudyError(str(exc), file=str(path), key="plugins") from None


def resolve_sections(registry: Registry, model: Any) -> tuple[dict[str, Any], list[str]]:
    """Every plugin section's tables validated against their plugins' Params (defaults filled)."""
    errors: list[str] = []
    resolved: dict[str, Any] = {}
    for section, kind in plugin_sections(many=False).items():
        resolved[section], errs = validate_plugin(registry, kind, getattr(model, section), section)
        errors += errs
    for section, kind in plugin_sections(many=True).items():
        resolved[section] = []
        for i, table in enumerate(getattr(model, section)):
            spec, errs = validate_plugin(registry, kind, table, f"{section}[{i}]")
            errors += errs
            resolved[section].append(spec)
    return resolved, errors


def invalid(errors: list[str], file: str) -> StudyError:
    """One problem is one line; several are a header and one indented line each, to fix them all in one go."""
    if len(errors) == 1:
        return StudyError(f"invalid study: {errors[0]}", file=file)
    return StudyError(f"invalid study ({len(errors)} problems):\n  " + "\n  ".join(errors), file=file)


def load_study(path: str | Path, profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               extra_plugins: list[str] | tuple[str, ...] = ()) -> Study:
    path = Path(path)
    file = str(path)
    raw = read_toml(path)
    if not raw:
        raise StudyError(f"the study is empty; it needs at least {', '.join(required_sections())}", file=file)
    if profile is not None:
        apply_profile(raw, profile, file)
    parsed = apply_set(raw, overrides, file)
    schema = study_model()
    try:
        model = schema.model_validate(raw)
    except ValidationError as exc:
        raise invalid(mark_set_errors(error_lines(exc, model=schema), parsed), file) from None
    registry, plugin_files = study_registry(path, model.plugins, extra_plugins)

    sections, errors = resolve_sections(registry, model)
    base = {section: sections[section] for section in cell_sections()}
    base["train"] = model.train.model_dump()
    axes, errs, notes = grid.axes(registry, model.grid, model.arm, base, {s: getattr(model, s) for s in cell_sections()})
    errors += errs
    if errors:  # also ask the plugins about the sections no grid or arm varies, to report everything at once
        varied = {k.split(".")[0] for k in model.grid} | {k.split(".")[0] for arm in model.arm for k in arm}
        errors += plugin_checks(registry, sections["sampler"], sections["metric"],
                                 [base["schedule"]] if base["schedule"] and "schedule" not in varied else [],
                                 [base["data"]] if base["data"] and "data" not in varied else [])
        raise invalid(mark_set_errors(errors, parsed), file)

    cells = []
    neutral_sections = _neutral_sections(registry)
    for arm, config, errs in grid.expand(registry, base, axes, file):
        if errs:
            raise invalid(errs, file)
        neutral = {k.section: neutral_defaults(registry.get(k.name, config[k.section]["name"]).Params)
                   for k in KINDS.values() if k.cell}
        cells += [Cell(config={**config, "seed": seed}, arm=arm, seed=seed, neutral=neutral,
                       neutral_sections=neutral_sections) for seed in model.study.seeds]
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise StudyError("two grid cells resolve to the same config; remove the duplicate option", file=file, key="grid")
    errors = plugin_checks(registry, sections["sampler"], sections["metric"], [c.config["schedule"] for c in cells],
                            [c.config["data"] for c in cells])
    errors += [e for device in dict.fromkeys(c.config["train"]["device"] for c in cells) if (e := device_error(device))]
    samplers = [registry.label("sampler", s) for s in sections["sampler"]]
    if model.eval.curve_sampler is not None and model.eval.curve_sampler not in samplers:
        errors.append(f"eval.curve_sampler: no sampler {model.eval.curve_sampler!r} in this study; samplers: {', '.join(samplers)}")
    if errors:
        raise invalid(errors, file)
    for note in notes:
        warnings.warn(f"{file}: {note}", StudyNote, stacklevel=2)
    for schedule in {json.dumps(c.config["schedule"], sort_keys=True): c.config["schedule"] for c in cells}.values():
        warn_if_not_noise(registry, schedule, file)
    contrasts = _contrasts(model.contrast, cells, sections, registry, file)
    _warn_if_few_seeds(model.study.seeds, contrasts, cells, samplers, file)
    return Study(path=path, name=model.study.name, question=model.study.question, profile=profile, raw=raw,
                 cells=cells, eval=model.eval, plugin_files=plugin_files, registry=registry, contrasts=contrasts,
                 sections=sections, companions=model.study.companions)


def _neutral_sections(registry: Registry) -> dict[str, dict[str, Any]]:
    """Section -> the default table of each neutral kind, resolved as a study that leaves it out gets it
    (a default whose plugin is not installed matches no cell: left out)."""
    resolved = {k.section: validate_plugin(registry, k.name, k.default, k.section) for k in KINDS.values() if k.neutral}
    return {section: table for section, (table, errors) in resolved.items() if not errors}


def _warn_if_few_seeds(seeds: list[int], contrasts: list[dict[str, Any]], cells: list[Cell], samplers: list[str],
                       file: str) -> None:
    """A verdict of better or worse needs the exact sign-flip test to agree with the paired t; with n seeds its
    smallest p is 2/2^n, which may never reach alpha."""
    tests = len(expand(contrasts, list(dict.fromkeys(c.arm for c in cells)), [*samplers, REAL_DATA]))
    least = sign_flip_min_seeds(ALPHA)
    n = len(set(seeds))
    if tests and n < least:
        warnings.warn(f"{file}: study.seeds: {n} seeds are too few for any verdict of better or worse: the exact sign-flip "
                      f"permutation test, which must agree with the paired t, cannot give p below 2/2^{n} = {2 / 2**n:.3g}"
                      f", so it cannot reach {ALPHA}; use at least {least} seeds", stacklevel=3)


def _contrasts(tables: list[dict[str, Any]], cells: list[Cell], sections: dict[str, Any],
               registry: Registry, file: str) -> list[dict[str, Any]]:
    """Validate the `[[contrast]]` tables against the expanded arms, the sampler labels and the metrics'
    declared keys; resolve the default sampler so the run's settings say exactly what was declared."""
    arms = list(dict.fromkeys(c.arm for c in cells))
    samplers = [registry.label("sampler", s) for s in sections["sampler"]]
    metric_classes = [registry.get("metric", m["name"]) for m in sections["metric"]]
    declared = [cls.keys for cls in metric_classes]
    errors, resolved = [], []
    for i, table in enumerate(tables):
        try:
            spec = ContrastSpec.model_validate(table)
        except ValidationError as exc:
            errors += error_lines(exc, f"contrast[{i}]", ContrastSpec)
            continue
        errors += [f"contrast[{i}].{e}" for e in check(spec, arms, [*samplers, REAL_DATA])]
        if declared and all(declared) and not any(cls.key_spec(spec.metric) for cls in metric_classes):
            keys = ", ".join(dict.fromkeys(k for d in declared for k in d))
            errors.append(f"contrast[{i}].metric: no metric of this study outputs {spec.metric!r}; declared keys: {keys}")
        if spec.over == "arm" and spec.sampler is None and samplers:
            spec = spec.model_copy(update={"sampler": samplers[0]})
        resolved.append(spec.model_dump())
    if errors:
        raise invalid(errors, file)
    return resolved
