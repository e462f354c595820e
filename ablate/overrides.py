"""A study's profiles and `--set` overrides: dotted keys applied to the raw TOML before validation."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

from ablate.errors import StudyError

WHOLE = ("grid",)  # tables whose own keys may hold dots ("data.D"): a profile replaces them whole


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {'train': {'steps': 3}} -> {'train.steps': 3}; `grid` stays one table."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in WHOLE:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(raw: dict[str, Any], dotted: str, value: Any, file: str, origin: str) -> None:
    """Set a dotted key (list entries by index); changing a plugin table's `name` drops the old plugin's params;
    a key ending in `+` appends its value (a list: each entry) to the list at that key."""
    parts = dotted.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise StudyError(f"{origin}: {'.'.join(parts[:i])} has {len(node)} entries; {part!r} is not an index", file=file, key=dotted)
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise StudyError(f"{origin}: {'.'.join(parts[: i + 1])} is a value, not a table", file=file, key=dotted)
    last = parts[-1]
    if last.endswith("+") and isinstance(node, dict):  # "contrast+" = [...]: extend the list, not replace it
        current = node.get(last[:-1], [])
        if not isinstance(current, list):
            raise StudyError(f"{origin}: {'.'.join([*parts[:-1], last[:-1]])} is not a list; `{last}` appends to a list",
                             file=file, key=dotted)
        node[last[:-1]] = current + (value if isinstance(value, list) else [value])
        return
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise StudyError(f"{origin}: not an index of a {len(node)}-entry list", file=file, key=dotted)
        node[int(last)] = value
        return
    if last == "name" and isinstance(node, dict) and node.get("name") not in (None, value):
        node.clear()
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.steps=300' -> ('train.steps', 300); values are TOML, bare words are strings."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StudyError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.steps=300")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], file: str, origin: str) -> None:
    """Set every dotted key; plugin switches (`*.name`) first, so their params land on the new plugin's table,
    and list extensions (`key+`) last, so they extend the list that this profile or --set gives."""
    for key in sorted(overrides, key=lambda k: (not k.endswith(".name"), k.endswith("+"))):
        set_dotted(raw, key, copy.deepcopy(overrides[key]), file, origin)


def apply_profile(raw: dict[str, Any], profile: str, file: str) -> None:
    """Apply the study's [profiles.NAME] table of dotted keys."""
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, dict) or profile not in profiles:
        known = ", ".join(profiles) if isinstance(profiles, dict) and profiles else "none"
        raise StudyError(f"no profile {profile!r}; profiles in this file: {known}", file=file, key=f"profiles.{profile}")
    if not isinstance(profiles[profile], dict):
        raise StudyError(f"expected a table of dotted keys, got {profiles[profile]!r}", file=file, key=f"profiles.{profile}")
    apply_overrides(raw, flatten(profiles[profile]), file, f"profile {profile!r}")


def apply_set(raw: dict[str, Any], texts: list[str] | tuple[str, ...], file: str) -> dict[str, Any]:
    """Apply the `--set KEY=VALUE` overrides; returns them parsed (to mark the errors they cause)."""
    try:
        parsed = dict(parse_override(o) for o in texts)
    except StudyError as exc:
        raise StudyError(str(exc), file=file) from None
    apply_overrides(raw, parsed, file, "--set")
    return parsed


def mark_set_errors(lines: list[str], overrides: dict[str, Any]) -> list[str]:
    """Mark the errors at (or under) a key given with --set, which the study file itself does not hold, right
    after the key: 'train.bogus (from --set train.bogus): unknown key; known: ...'."""
    def given(where: str) -> str | None:  # at the key, under it, or a table above it (`nosuch` of `nosuch.key`)
        return next((k for k in overrides if where == k or where.startswith((f"{k}.", f"{k}[")) or k.startswith(f"{where}.")), None)
    out = []
    for line in lines:
        where, sep, rest = line.partition(":")
        key = given(re.sub(r"\[(\d+)\]", r".\1", where))
        out.append(f"{where} (from --set {key}){sep}{rest}" if key else line)
    return out
