"""Grid expansion: a study's `[grid]` axes and `[[arm]]` list become resolved training-cell configs.

Each axis is a list of options; an option is a label and the (key, value) pairs it sets: a plugin
section and its resolved table, or a dotted key and a value. `grid` axes combine as a cartesian
product; the `[[arm]]` list is one more axis of hand-picked combinations. One merge rule for plugin
tables: an option with the base table's plugin name overrides only the params it gives; another name
starts from that plugin's defaults, with a note naming the base params it drops.
"""

from __future__ import annotations

import copy
import itertools
import json
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


def merged(value: Any, base: dict[str, Any]) -> Any:
    """A grid or arm plugin table with the base table's plugin name keeps the base's params it does not
    give; any other table (another plugin: its params are not the base's) stands as written."""
    if isinstance(value, dict) and base and value.get("name") == base["name"]:
        return {**base, **value}
    return value


def dropped(section: str, name: Any, written: dict[str, dict[str, Any]]) -> str | None:
    """The note for switching `section` to plugin `name`: the base params given in the study that it drops."""
    table = written.get(section) or {}
    params = ", ".join(f"{k}={v!r}" for k, v in table.items() if k != "name")
    if not params or name == table.get("name"):
        return None
    return (f"{section} {name!r} starts from its own defaults; the base [{section}] parameters of "
            f"{table.get('name')!r} are not used: {params}")


def resolve_option(registry: Registry, pairs: dict[str, Any], base: dict[str, Any], written: dict[str, dict[str, Any]],
                   where: str, notes: dict[str, list[str]]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Validate one grid option (section -> plugin table, or dotted key -> value), merged with the base
    tables by the merge rule; a switch to another plugin adds a note (note -> where) when it drops params."""
    sections = plugin_sections(many=False)
    errors, resolved = [], []
    for key, value in pairs.items():
        section = key.split(".")[0]
        here = f"{where}.{key}" if len(pairs) > 1 else where
        if section not in base:
            errors.append(f"{where}: {key!r} is not under {', '.join(base)}")
            continue
        if key in sections:
            spec, errs = validate_plugin(registry, sections[key], merged(value, base[key]), here)
            errors += errs
            if spec:
                resolved.append((key, spec))
            name = value.get("name") if isinstance(value, dict) else None
        else:
            resolved.append((key, value))
            name = value if key == f"{section}.name" and section in sections else None
        note = dropped(section, name, written) if name is not None else None
        if note:
            notes.setdefault(note, []).append(here)
    return resolved, errors


def varying(options: list[list[tuple[str, Any]]]) -> dict[str, frozenset[str]]:
    """Per plugin section, the params that tables of different plugins on one axis both have, with
    different values: a label shows them even at a plugin's default (`linear(T=200)` beside
    `cosine(T=1000)`, not beside `cosine`). Within one plugin the non-default params tell tables apart."""
    sections = plugin_sections(many=False)
    seen: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pairs in options:
        for key, spec in pairs:
            if key in sections:
                for param, value in spec.items():
                    seen.setdefault((key, param), []).append((spec["name"], json.dumps(value, sort_keys=True)))
    shown: dict[str, set[str]] = {}
    for (section, param), tables in seen.items():
        names, values = zip(*tables, strict=True)
        if param != "name" and len(set(names)) > 1 and len(set(values)) > 1:
            shown.setdefault(section, set()).add(param)
    return {section: frozenset(params) for section, params in shown.items()}


def label(registry: Registry, pairs: list[tuple[str, Any]], shown: dict[str, frozenset[str]]) -> str:
    """An option's label: each plugin table by name and params (see `varying`), each dotted key as key=value."""
    sections = plugin_sections(many=False)
    return " + ".join(registry.label(sections[key], value, shown.get(key, frozenset())) if key in sections
                      else f"{key.split('.')[-1]}={value}" for key, value in pairs)


def axes(registry: Registry, grid: dict[str, list[Any]], arms: list[dict[str, Any]], base: dict[str, Any],
         written: dict[str, dict[str, Any]]) -> tuple[list[list[Option]], list[str], list[str]]:
    """The study's axes, every option validated, merged with the base and labelled; the errors found; and
    one note per switch to another plugin that drops base params (`written`: the base tables as given)."""
    out: list[list[Option]] = []
    errors: list[str] = []
    notes: dict[str, list[str]] = {}
    wheres = [[(f"grid.{axis}[{i}]", {axis: value}) for i, value in enumerate(options)] for axis, options in grid.items()]
    for axis, options in grid.items():
        if not options:
            errors.append(f"grid.{axis}: an empty list leaves the study with no cells; give at least one value or remove it")
    if arms:
        wheres.append([(f"arm[{i}]", arm_entries(table)) for i, table in enumerate(arms)])
    for axis in wheres:
        resolved = []
        for where, pairs in axis:
            option, errs = resolve_option(registry, pairs, base, written, where, notes)
            errors += errs
            resolved.append(option)
        shown = varying(resolved)
        out.append([(label(registry, pairs, shown), pairs) for pairs in resolved])
    return out, errors, [f"{', '.join(places)}: {note}" for note, places in notes.items()]


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
            errors += error_lines(exc, "grid (train)", TrainConfig)
    return errors


def _order(key: str, sections: dict[str, str]) -> int:
    return 0 if key in sections else 1 if key.endswith(".name") else 2


def expand(registry: Registry, base: dict[str, Any], study_axes: list[list[Option]],
           file: str) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(arm label, resolved config, errors) for each combination of one option per axis."""
    sections = plugin_sections(many=False)
    for combo in itertools.product(*study_axes):
        config = copy.deepcopy(base)
        # whole tables, then plugin switches by dotted `name`, then dotted params, whatever the axis order:
        # a param set on a table is never lost to a table or switch that lands after it
        for key, value in sorted((kv for _, pairs in combo for kv in pairs), key=lambda kv: _order(kv[0], sections)):
            if key in sections:
                config[key] = value
            else:
                set_dotted(config, key, value, file, "grid")
        errors = revalidate(config, registry, [k for _, pairs in combo for k, _ in pairs])
        yield " + ".join(label for label, _ in combo) or "default", config, errors
