"""Plugin discovery (entry points of group "ablate" and local files) and the registry.

Built-ins register through the same entry-point group as third-party packages. Each
plugin module is loaded and asked for its classes on its own, so one broken plugin is
reported with its origin and never takes the others down (llm issue #1280). Results are stored
under names made here too: a plugin table's label and a resolved config's hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from ablate import hookspecs
from ablate.errors import PluginError, did_you_mean
from ablate.interfaces import KINDS, Plugin

GROUP = "ablate"
BUILTIN_DIST = "ablate"
LOAD_ENV = "ABLATE_LOAD_PLUGINS"


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from: 'built-in', a package and its version, or a file path."""

    source: str  # "built-in" | "package" | "file"
    label: str  # package name or file path
    version: str = ""

    def __str__(self) -> str:
        if self.source == "built-in":
            return "built-in"
        if self.source == "package":
            return f"{self.label} {self.version}".strip()
        return self.label


def config_hash(config: dict[str, Any]) -> str:
    """A resolved config's identity: 12 hex digits of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plugin_label(table: dict[str, Any], defaults: dict[str, Any] | None = None, shown: frozenset[str] = frozenset()) -> str:
    """'one_step(jump_at=500)': the name plus the params that differ from the defaults, and those in `shown`
    whatever their value (params that differ between a study's arms)."""
    defaults = defaults or {}
    args = [f"{k}={v}" for k, v in table.items() if k != "name" and (k in shown or defaults.get(k, object()) != v)]
    return f"{table['name']}({', '.join(args)})" if args else str(table["name"])


@dataclass
class Registry:
    """Plugin classes by kind and name, with their origins and the load problems seen."""

    plugins: dict[str, dict[str, type[Plugin]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unusable: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> why it was not registered

    def get(self, kind: str, name: str) -> type[Plugin]:
        if kind not in self.plugins:
            raise PluginError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(self.plugins)}")
        try:
            return self.plugins[kind][name]
        except KeyError:
            if (kind, name) in self.unusable:
                raise PluginError(f"{kind} {name!r} cannot be used: {self.unusable[(kind, name)]}") from None
            known = self.names(kind)
            if not known:  # a kind whose standard plugins' entry point is not installed yet
                raise PluginError(f"unknown {kind} {name!r}: no {kind} plugin is loaded; an entry point added to "
                                  "pyproject.toml loads only after `pip install -e .` again (an old ablate.egg-info "
                                  "folder in the current folder hides it: delete it)") from None
            raise PluginError(f"unknown {kind} {name!r}; known: {', '.join(known)}{did_you_mean(name, known)}") from None

    def names(self, kind: str) -> list[str]:
        if kind not in self.plugins:
            raise PluginError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(self.plugins)}")
        return sorted(self.plugins[kind])

    def origin(self, kind: str, name: str) -> Origin:
        return self.origins[(kind, name)]

    def create(self, kind: str, name: str, params: dict | None = None) -> Plugin:
        """Validate params against the plugin's Params and construct it."""
        cls = self.get(kind, name)
        return cls(cls.Params.model_validate(params or {}))

    def from_table(self, kind: str, table: dict) -> Plugin:
        """Construct from a study's plugin table: {name, **params}."""
        return self.create(kind, table["name"], {k: v for k, v in table.items() if k != "name"})

    def label(self, kind: str, table: dict[str, Any], shown: frozenset[str] = frozenset()) -> str:
        """A resolved plugin table's label: the name plus its non-default params (and those in `shown`)."""
        defaults = self.get(kind, table["name"]).Params.model_construct().model_dump(mode="json")
        return plugin_label(table, defaults, shown)

    def add(self, kind: str, cls: object, origin: Origin) -> None:
        problem = _malformed(kind, cls)
        if problem:
            raise PluginError(f"{origin}: {problem}")
        name = cls.name  # type: ignore[attr-defined]
        if name in self.plugins[kind]:
            raise PluginError(
                f"two {kind} plugins are named {name!r}: one from {self.origins[(kind, name)]}, one from {origin}"
            )
        self.plugins[kind][name] = cls  # type: ignore[assignment]
        self.origins[(kind, name)] = origin


def _malformed(kind: str, cls: object) -> str | None:
    """Why `cls` cannot be a plugin of `kind`, or None."""
    base = KINDS[kind].base
    if not isinstance(cls, type):
        return f"the {kind} hook returned {cls!r}, which is not a class"
    if not issubclass(cls, base):
        return f"{cls.__qualname__} is not a subclass of ablate.{base.__name__}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return f"{cls.__qualname__} has no `name` (a non-empty class attribute string)"
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return f"{cls.__qualname__} has no `Params` (a pydantic BaseModel subclass)"
    missing = [m for m in base.required if not implements(cls, m)]
    if missing:
        methods = ", ".join(f"`{m}`" for m in missing)
        return (f"{cls.__qualname__} does not define {methods}, which every {kind} plugin needs "
                f"(optional: {', '.join(base.optional) or 'none'}; see docs/writing-a-plugin.md)")
    return _invalid_defaults(kind, cls)


def _invalid_defaults(kind: str, cls: Any) -> str | None:
    """Why the defaults of `cls.Params` do not pass its own validation, or None. pydantic does not
    validate defaults, so a bad one (`Field(0, ge=1)`) would otherwise surface only after training."""
    fields = cls.Params.model_fields
    given = {f.alias or name: f.get_default(call_default_factory=True) for name, f in fields.items() if not f.is_required()}
    try:
        cls.Params.model_validate(given)
    except ValidationError as exc:
        bad = [f"parameter `{'.'.join(map(str, e['loc']))}` = {e['input']!r}: {e['msg']}" if e["loc"] else e["msg"]
               for e in exc.errors() if e["type"] != "missing"]
        if bad:
            return f"{kind} {cls.name!r} ({cls.__qualname__}) has an invalid default: {'; '.join(bad)}"
    except Exception as exc:  # a validator of the plugin's that raises something else
        return f"{kind} {cls.name!r} ({cls.__qualname__}): validating its Params defaults raised {type(exc).__name__}: {exc}"
    return None


def implements(cls: type, method: str) -> bool:
    """Whether `cls` (or a class between it and its kind's base) defines `method`: the base's
    own version is a placeholder, so inheriting only that counts as leaving the method out."""
    base = KINDS[cls.kind].base  # type: ignore[attr-defined]
    found = inspect.getattr_static(cls, method, None)
    return callable(found) and found is not inspect.getattr_static(base, method, None)


def _module_from_file(path: Path) -> ModuleType:
    """Import a plugin file under a name derived from its absolute path."""
    if not path.is_file():
        raise PluginError(f"plugin file not found: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"ablate_local_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _norm(name: str) -> str:
    """Distribution names compare like pip compares them: case, '-', '_' and '.' do not matter."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _entry_point_modules(problems: list[str]) -> list[tuple[ModuleType, Origin]]:
    """Import every entry point of group "ablate"; $ABLATE_LOAD_PLUGINS limits third-party ones
    (a name it gives that matches no installed package is a problem: a typo would load nothing)."""
    wanted = os.environ.get(LOAD_ENV)
    allowed = None if wanted is None else {_norm(w): w.strip() for w in wanted.split(",") if w.strip()}
    matched, installed = {_norm(BUILTIN_DIST)}, []
    loaded = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        builtin = dist == BUILTIN_DIST
        if not builtin:
            installed.append(dist)
            matched |= {_norm(dist), _norm(ep.name)}
        if not builtin and allowed is not None and _norm(dist) not in allowed and _norm(ep.name) not in allowed:
            continue
        origin = (
            Origin("built-in", dist)
            if builtin
            else Origin("package", dist, ep.dist.version if ep.dist is not None else "")
        )
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not hide the rest
            problems.append(f"plugin {ep.name!r} from {origin} failed to import: {type(exc).__name__}: {exc}")
            continue
        loaded.append((module, origin))
    unmatched = [name for norm, name in (allowed or {}).items() if norm not in matched]
    if unmatched:
        problems.append(f"{LOAD_ENV} names {', '.join(unmatched)}, which no installed plugin package provides; "
                        f"installed: {', '.join(dict.fromkeys(installed)) or 'none besides the built-ins'}")
    return loaded


def load_registry(extra_plugin_files: tuple[str | Path, ...] | list[str | Path] = (), *, strict_files: bool = True) -> Registry:
    """Discover all plugins. Broken entry points become warnings; broken local files are errors
    (the user named them), unless strict_files is False."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs.hookspecs(KINDS.values()))
    registry = Registry()
    sources = _entry_point_modules(registry.problems)
    for file in extra_plugin_files:
        path = Path(file).expanduser().resolve()
        origin = Origin("file", str(path))
        try:
            sources.append((_module_from_file(path), origin))
        except Exception as exc:
            message = str(exc) if isinstance(exc, PluginError) else f"plugin file {path} failed to import: {type(exc).__name__}: {exc}"
            if strict_files:
                raise PluginError(message) from None
            registry.problems.append(message)
    by_module: dict[int, Origin] = {}

    def broken(origin: Origin, message: str) -> None:
        """A local file the user named fails loudly; an installed package is skipped with a warning."""
        if strict_files and origin.source == "file":
            raise PluginError(message) from None
        registry.problems.append(message)

    for module, origin in sources:
        if pm.is_registered(module):
            continue
        try:
            pm.register(module, name=f"{origin}:{module.__name__}")
        except Exception as exc:
            broken(origin, f"{origin}: {exc}")
            continue
        by_module[id(module)] = origin
    while True:
        try:
            pm.check_pending()  # a misspelled hook name fails loudly
            break
        except pluggy.PluginValidationError as exc:
            origin = by_module.get(id(exc.plugin))
            if origin is None:
                raise PluginError(f"{exc.plugin}: {exc}") from None
            broken(origin, f"{origin}: {exc}")
            pm.unregister(exc.plugin)
    for kind, hook in ((k.name, k.hook) for k in KINDS.values()):
        for impl in getattr(pm.hook, hook).get_hookimpls():
            origin = by_module[id(impl.plugin)]
            try:
                classes = impl.function()
            except Exception as exc:
                broken(origin, f"{origin}: hook {hook} raised {type(exc).__name__}: {exc}")
                continue
            if not isinstance(classes, (list, tuple)):
                broken(origin, f"{origin}: hook {hook} must return a list of plugin classes, got {classes!r}")
                continue
            for cls in classes:
                problem = _malformed(kind, cls)
                if problem:
                    if isinstance(getattr(cls, "name", None), str):  # a study naming it is told why, not "unknown"
                        registry.unusable[(kind, cls.name)] = f"{origin}: {problem}"
                    broken(origin, f"{origin}: {problem}")
                    continue
                registry.add(kind, cls, origin)  # two plugins with one name stay an error, whatever their origin
    for problem in registry.problems:
        warnings.warn(problem, stacklevel=2)
    return registry
