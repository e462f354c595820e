"""Plugin code identities: what a stored result was computed with, and what has changed since.

Every cell and every evaluation records {'kind/name': identity} of the plugins it rests on (a local
file by the sha256 of its content, a package by its version, a built-in by ablate's version); an
evaluation also records the evaluation settings that change what it measures (`eval`). A result is
stale only when the code of a plugin it names differs from the current code of that same plugin: a
plugin the current study does not use is no change, so studies that share a runs folder (and cells)
never make each other's results stale.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ablate.plugins import Registry

FILE_HASH = " sha256:"  # a local file's identity: "<path> sha256:<hex digest of its content>"


def plugin_identity(registry: Registry, kind: str, name: str) -> str:
    """The code a plugin runs: a local file by the sha256 of its content, a package by its version,
    a built-in by ablate's version."""
    origin = registry.origin(kind, name)
    if origin.source == "file":
        return file_identity(origin.label)
    if origin.source == "package":
        return f"{origin.label}=={origin.version}"
    return f"built-in (ablate {ablate_version()})"


def file_identity(path: str) -> str:
    return f"{path}{FILE_HASH}{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"


def ablate_version() -> str:
    try:
        return version("ablate")
    except PackageNotFoundError:
        return "unknown"


def is_plugin(entry: str) -> bool:
    """'kind/name' entries name a plugin; the others ('eval') are settings."""
    return "/" in entry


def code(identity: str | None) -> str | None:
    """What an identity says about the code: a local file's content hash, not where the file lies (a
    moved or copied project keeps its results)."""
    return identity.rsplit(FILE_HASH, 1)[1] if identity and FILE_HASH in identity else identity


def changes(old: dict[str, str], new: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Entry -> (stored, current) for what differs between a stored identity and the current one. A
    plugin counts only when both name it (one the current study does not use is no change); a setting
    counts whenever it differs (absent: its default)."""
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if code(old.get(k)) != code(new.get(k)) and not (is_plugin(k) and (k not in old or k not in new))}


def current_identity(registry: Registry, entry: str, stored: str, located: str | None = None) -> str | None:
    """The identity a stored plugin entry has now: a local file hashed again (where `located`, the latest
    run's identity of it, says it lies; else where it was), any other plugin as the registry has it
    (None: not available here, so nothing to compare)."""
    if FILE_HASH in stored:
        path = (located if located and FILE_HASH in located else stored).rsplit(FILE_HASH, 1)[0]
        return file_identity(path) if Path(path).is_file() else None
    kind, name = entry.split("/", 1)
    if (kind, name) not in registry.origins:
        return None
    return plugin_identity(registry, kind, name)


def outdated(recorded: Iterable[dict[str, str]], registry: Registry, located: dict[str, str]) -> dict[str, str]:
    """'kind/name' -> its current identity, for each plugin named in the recorded identities whose
    code has changed since (what `ablate report` warns about). located: the latest run's identities."""
    out: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for identity in recorded:
        for entry, stored in identity.items():
            if not is_plugin(entry) or entry in out or (entry, stored) in seen:
                continue
            seen.add((entry, stored))
            now = current_identity(registry, entry, stored, located.get(entry))
            if now is not None and code(now) != code(stored):
                out[entry] = now
    return dict(sorted(out.items()))
