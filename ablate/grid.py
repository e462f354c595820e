"""Grid expansion: a study's `[grid]` axes and `[[arm]]` list become resolved training-cell configs.

Each axis is a list of options; an option is a label and the (key, value) pairs it sets: a plugin
section and its resolved table, or a dotted key and a value. `grid` axes combine as a cartesian
product; the `[[arm]]` list is one more axis of hand-picked combinations.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from ablate.overrides import flatten, set_dotted
from ablate.plugins import Registry
from ablate.schema import TrainConfig, error_lines, plugin_sections, validate_plugin

Option = tuple[str, list[tuple[str, Any]]]  # (label, [(section or dotted key, value)])


def arm_entries(table: dict[str, Any]) -> dict[str, Any]:
    """An arm's entries: plugin sections stay whole tables, everything else becomes dotted keys."""
    sections = plugin_sections(many=False)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key not in sections:
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out


def resolve_option(registry: Registry, pairs: dict[str, Any], base: dict[str, Any], where: str) -> tuple[Option, list[str]]:
    """Validate one grid option (section -> plugin table, or dotted key -> value) and label it."""
    sections = plugin_sections(many=False)
    errors, resolved, labels = [], [], []
    for key, value in pairs.items():
        section = key.split(".")[0]
        if section not in base:
            errors.append(f"{where}: {key!r} is not under {', '.join(base)}")
        elif key in sections:
            spec, errs = validate_plugin(registry, sections[key], value, f"{where}.{key}" if len(pairs) > 1 else where)
            errors += errs
            if spec:
                labels.append(registry.label(sections[key], spec))
                resolved.append((key, spec))
        else:
            labels.append(f"{key.split('.')[-1]}={value}")
            resolved.append((key, value))
    return (" + ".join(labels), resolved), errors


def axes(registry: Registry, grid: dict[str, list[Any]], arms: list[dict[str, Any]],
         base: dict[str, Any]) -> tuple[list[list[Option]], list[str]]:
    """The study's axes, every option validated and labelled, and the errors found."""
    out: list[list[Option]] = []
    errors: list[str] = []
    for axis, options in grid.items():
        if not options:
            errors.append(f"grid.{axis}: an empty list leaves the study with no cells; give at least one value or remove it")
        resolved = []
        for i, value in enumerate(options):
            option, errs = resolve_option(registry, {axis: value}, base, f"grid.{axis}[{i}]")
            errors += errs
            resolved.append(option)
        out.append(resolved)
    if arms:
        resolved = []
        for i, table in enumerate(arms):
            option, errs = resolve_option(registry, arm_entries(table), base, f"arm[{i}]")
            errors += errs
            resolved.append(option)
        out.append(resolved)
    return out, errors


def revalidate(config: dict[str, Any], registry: Registry, keys: list[str]) -> list[str]:
    """Dotted grid values (e.g. model.ch) land inside plugin tables: validate the result again."""
    sections = plugin_sections(many=False)
    errors = []
    for section in {a.split(".")[0] for a in keys if "." in a} & set(sections):
        config[section], errs = validate_plugin(registry, sections[section], config[section], f"grid ({section})")
        errors += errs
    if "train" in {a.split(".")[0] for a in keys}:
        try:
            config["train"] = TrainConfig.model_validate(config["train"]).model_dump()
        except ValidationError as exc:
            errors += error_lines(exc, "grid (train)")
    return errors


def expand(registry: Registry, base: dict[str, Any], study_axes: list[list[Option]],
           file: str) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(arm label, resolved config, errors) for each combination of one option per axis."""
    sections = plugin_sections(many=False)
    for combo in itertools.product(*study_axes):
        config = copy.deepcopy(base)
        for _, pairs in combo:
            for key, value in pairs:
                if key in sections:
                    config[key] = value
                else:
                    set_dotted(config, key, value, file, "grid")
        errors = revalidate(config, registry, [k for _, pairs in combo for k, _ in pairs])
        yield " + ".join(label for label, _ in combo) or "default", config, errors
