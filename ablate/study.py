"""The study file: TOML read with tomllib, profiles and --set overrides applied, validated with
pydantic against the plugins' own Params, and expanded into training cells.

Every error names the file, the dotted key path and what was expected; the whole study is
validated before any training starts.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ablate.contrasts import ContrastSpec, check
from ablate.errors import AblateError, StudyError
from ablate.plugins import Registry, implements, load_registry
from ablate.store import REAL_DATA

PLUGIN_SECTIONS = {"data": "dataset", "model": "model", "schedule": "schedule", "target": "target",
                   "weighting": "weighting", "executor": "executor"}
LIST_SECTIONS = {"sampler": "sampler", "metric": "metric"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyInfo(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="identifier of the study (reports/<name>/)")
    question: str = Field("", description="the question the study answers, quoted in its report")
    seeds: list[int] = Field([0], min_length=1, description="training seeds; every arm runs once per seed")


class TrainConfig(_Strict):
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate after warmup")
    warmup: int = Field(100, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the evaluated weights")
    checkpoint_every: int = Field(500, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(10, ge=1, description="steps between recorded losses")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    bf16: bool = Field(True, description="bf16 autocast on CUDA")
    compile: bool = Field(False, description="torch.compile the model (GPU)")


class EvalConfig(_Strict):
    batch_size: int = Field(1000, ge=1, description="samples generated per batch")
    grid_samples: int = Field(64, ge=0, description="samples kept per sampler for the report's sample grid")
    reference: Literal["test", "train"] = Field("test", description="real split samples are compared with: the "
                                                "held-out 'test' split, or 'train' (what the model was fitted to)")
    clip_x0: bool | None = Field(None, description="clamp x0_hat to [-1, 1] at the denoiser (DDPM's clip_denoised) "
                                 "for every sampler; default: on for image data, off otherwise")
    raw_weights: bool = Field(False, description="also evaluate the raw (non-EMA) final weights")
    at_steps: list[int] = Field([], description="training steps at which the cheap metrics are also evaluated "
                                "(learning curves), with the EMA weights of that step")


class StudyModel(_Strict):
    plugins: list[str] = []
    study: StudyInfo
    data: dict[str, Any]
    model: dict[str, Any]
    schedule: dict[str, Any] = {"name": "linear"}
    target: dict[str, Any] = {"name": "epsilon"}
    weighting: dict[str, Any] = {"name": "simple"}
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    executor: dict[str, Any] = {"name": "local"}
    grid: dict[str, list[Any]] = {}
    arm: list[dict[str, Any]] = []
    sampler: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "ancestral"}])
    metric: list[dict[str, Any]] = []
    contrast: list[dict[str, Any]] = []
    profiles: dict[str, dict[str, Any]] = {}


@dataclass
class Cell:
    """One training run: a resolved (data, model, schedule, target, weighting, train, seed) config."""

    config: dict[str, Any]
    arm: str
    seed: int

    @property
    def key(self) -> str:
        """The hash of the config without its bookkeeping: settings that cannot change the numbers
        (how often to checkpoint or log) reuse the cell instead of training the same model again."""
        train = {k: v for k, v in self.config["train"].items() if k not in BOOKKEEPING}
        return config_hash({**self.config, "train": train})


@dataclass
class Study:
    path: Path
    name: str
    question: str
    profile: str | None
    raw: dict[str, Any]
    cells: list[Cell]
    samplers: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    eval: EvalConfig
    executor: dict[str, Any]
    plugin_files: list[Path]
    registry: Registry
    contrasts: list[dict[str, Any]]


BOOKKEEPING = ("checkpoint_every", "log_every")  # train settings outside the cell key


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plugin_label(table: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """'one_step(jump_at=500)': the name plus the params that differ from the defaults."""
    defaults = defaults or {}
    args = [f"{k}={v}" for k, v in table.items() if k != "name" and defaults.get(k, object()) != v]
    return f"{table['name']}({', '.join(args)})" if args else str(table["name"])


def label(registry: Registry, kind: str, spec: dict[str, Any]) -> str:
    """A resolved plugin table's label: the name plus its non-default params."""
    defaults = registry.get(kind, spec["name"]).Params.model_construct().model_dump(mode="json")
    return plugin_label(spec, defaults)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(raw: dict[str, Any], dotted: str, value: Any, file: str, origin: str) -> None:
    """Set a dotted key; changing a plugin table's `name` drops the old plugin's params."""
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


def _apply(raw: dict[str, Any], overrides: dict[str, Any], file: str, origin: str) -> None:
    # plugin switches first, so their params land on the new plugin's table
    for key in sorted(overrides, key=lambda k: not k.endswith(".name")):
        _set(raw, key, copy.deepcopy(overrides[key]), file, origin)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_set(lines: list[str], overrides: dict[str, Any]) -> list[str]:
    """Mark the errors at (or under) a key given with --set, which the study file itself does not hold."""
    def given(where: str) -> str | None:
        return next((k for k in overrides if where == k or where.startswith((f"{k}.", f"{k}["))), None)
    return [f"{line} (from --set {key})" if (key := given(line.split(":")[0])) else line for line in lines]


def _errors(exc: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(p for p in (prefix, _loc(err["loc"])) if p)
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err["input"], dict) else ""
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where or '(top level)'}: {msg}{got}")
    return lines


def validate_plugin(registry: Registry, kind: str, table: Any, key: str) -> tuple[dict[str, Any], list[str]]:
    """Resolve a plugin table {name, **params} to its full params (defaults filled), or errors."""
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        return {}, [f"{key}: expected a table with a `name` (a {kind} plugin), got {table!r}"]
    try:
        cls = registry.get(kind, table["name"])
    except AblateError as exc:
        return {}, [f"{key}.name: {exc}"]
    params = {k: v for k, v in table.items() if k != "name"}
    try:
        parsed = cls.Params.model_validate(params)
    except ValidationError as exc:
        return {}, _errors(exc, key)
    return {"name": table["name"], **parsed.model_dump(mode="json")}, []


def load_study(path: str | Path, profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               extra_plugins: list[str] | tuple[str, ...] = ()) -> Study:
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise StudyError("study file not found", file=file)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"not valid TOML: {exc}", file=file) from None
    profiles = raw.get("profiles", {})
    if profile is not None:
        if not isinstance(profiles, dict) or profile not in profiles:
            known = ", ".join(profiles) if isinstance(profiles, dict) and profiles else "none"
            raise StudyError(f"no profile {profile!r}; profiles in this file: {known}", file=file, key=f"profiles.{profile}")
        if not isinstance(profiles[profile], dict):
            raise StudyError(f"expected a table of dotted keys, got {profiles[profile]!r}", file=file, key=f"profiles.{profile}")
        _apply(raw, _flatten(profiles[profile]), file, f"profile {profile!r}")
    try:
        parsed = dict(parse_override(o) for o in overrides)
    except StudyError as exc:
        raise StudyError(str(exc), file=file) from None
    _apply(raw, parsed, file, "--set")
    try:
        model = StudyModel.model_validate(raw)
    except ValidationError as exc:
        raise StudyError("invalid study:\n  " + "\n  ".join(_from_set(_errors(exc), parsed)), file=file) from None

    plugin_files = [(path.parent / p).resolve() for p in model.plugins] + [Path(p).resolve() for p in extra_plugins]
    missing = [str(p) for p in plugin_files if not p.is_file()]
    if missing:
        raise StudyError(f"plugin file not found: {', '.join(missing)}", file=file, key="plugins")
    try:
        registry = load_registry(plugin_files)
    except AblateError as exc:
        raise StudyError(str(exc), file=file, key="plugins") from None

    errors: list[str] = []
    resolved: dict[str, dict[str, Any]] = {}
    for section, kind in PLUGIN_SECTIONS.items():
        resolved[section], errs = validate_plugin(registry, kind, getattr(model, section), section)
        errors += errs
    lists: dict[str, list[dict[str, Any]]] = {}
    for section, kind in LIST_SECTIONS.items():
        lists[section] = []
        for i, table in enumerate(getattr(model, section)):
            spec, errs = validate_plugin(registry, kind, table, f"{section}[{i}]")
            errors += errs
            lists[section].append(spec)
    base = {section: resolved[section] for section in ("data", "model", "schedule", "target", "weighting")}
    base["train"] = model.train.model_dump()
    # Each axis is a list of options; an option is a label and (key, value) pairs to set. `grid`
    # axes combine as a cartesian product; the `[[arm]]` list is one more axis of hand-picked combinations.
    axes: list[list[tuple[str, list[tuple[str, Any]]]]] = []
    for axis, options in model.grid.items():
        if not options:
            errors.append(f"grid.{axis}: an empty list leaves the study with no cells; give at least one value or remove it")
        resolved_options = []
        for i, value in enumerate(options):
            option, errs = _option(registry, {axis: value}, base, f"grid.{axis}[{i}]")
            errors += errs
            resolved_options.append(option)
        axes.append(resolved_options)
    if model.arm:
        arm_options = []
        for i, table in enumerate(model.arm):
            option, errs = _option(registry, _flatten_plugins(table), base, f"arm[{i}]")
            errors += errs
            arm_options.append(option)
        axes.append(arm_options)
    if errors:  # also ask the plugins about the sections no grid or arm varies, to report everything at once
        varied = {k.split(".")[0] for k in model.grid} | {k.split(".")[0] for arm in model.arm for k in arm}
        errors += _plugin_checks(registry, lists["sampler"], lists["metric"],
                                 [base["schedule"]] if base["schedule"] and "schedule" not in varied else [],
                                 [base["data"]] if base["data"] and "data" not in varied else [])
        raise StudyError("invalid study:\n  " + "\n  ".join(_from_set(errors, parsed)), file=file)

    cells = []
    for combo in itertools.product(*axes):
        config = copy.deepcopy(base)
        for _, pairs in combo:
            for key, value in pairs:
                if key in PLUGIN_SECTIONS:
                    config[key] = value
                else:
                    _set(config, key, value, file, "grid")
        errs = _recheck(config, registry, [k for _, pairs in combo for k, _ in pairs])
        if errs:
            raise StudyError("invalid study:\n  " + "\n  ".join(errs), file=file)
        arm = " + ".join(label for label, _ in combo) or "default"
        cells += [Cell(config={**config, "seed": seed}, arm=arm, seed=seed) for seed in model.study.seeds]
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise StudyError("two grid cells resolve to the same config; remove the duplicate option", file=file, key="grid")
    errors = _plugin_checks(registry, lists["sampler"], lists["metric"], [c.config["schedule"] for c in cells],
                            [c.config["data"] for c in cells])
    errors += [e for device in dict.fromkeys(c.config["train"]["device"] for c in cells) if (e := _device_error(device))]
    if errors:
        raise StudyError("invalid study:\n  " + "\n  ".join(errors), file=file)
    for schedule in {json.dumps(c.config["schedule"], sort_keys=True): c.config["schedule"] for c in cells}.values():
        _warn_if_not_noise(registry, schedule, file)
    contrasts = _contrasts(model.contrast, cells, lists, registry, file)
    return Study(path=path, name=model.study.name, question=model.study.question, profile=profile, raw=raw,
                 cells=cells, samplers=lists["sampler"], metrics=lists["metric"], eval=model.eval,
                 executor=resolved["executor"], plugin_files=plugin_files, registry=registry,
                 contrasts=contrasts)


def _warn_if_not_noise(registry: Registry, schedule: dict[str, Any], file: str) -> None:
    """Sampling starts from N(0, I), which is only right when abar_T is close to 0."""
    name = label(registry, "schedule", schedule)
    try:
        abar_T = float(registry.from_table("schedule", schedule).diffusion().alpha_bars[-1])
    except Exception as exc:  # a plugin's betas: say so before any training starts
        raise StudyError(f"schedule {name}: could not build its betas ({type(exc).__name__}: {exc})", file=file, key="schedule") from None
    if abar_T > 1e-3:
        warnings.warn(f"{file}: schedule {name} ends at abar_T = {abar_T:.3g} > 1e-3, so x_T "
                      "is far from the N(0, I) that sampling starts from; raise T or beta_end, keep linear's "
                      "scale_with_T = true, or use the cosine schedule", stacklevel=3)


def _plugin_checks(registry: Registry, samplers: list[dict[str, Any]], metrics: list[dict[str, Any]],
                   schedules: list[dict[str, Any]], datasets: list[dict[str, Any]]) -> list[str]:
    """Ask each sampler about every schedule and each metric about every dataset (their optional
    `check` methods), so that a combination that cannot work fails before anything trains. A dataset
    is loaded only when some metric has a check."""
    errors: list[str] = []
    pairs = [("sampler", samplers, "schedule", schedules, lambda table: registry.from_table("schedule", table).diffusion()),
             ("metric", metrics, "data", datasets, lambda table: registry.from_table("dataset", table).load().spec)]
    for kind, specs, section, tables, build in pairs:
        checked = [(i, registry.from_table(kind, spec)) for i, spec in enumerate(specs)
                   if spec and implements(registry.get(kind, spec["name"]), "check")]
        unique = {json.dumps(t, sort_keys=True): t for t in tables} if checked else {}
        for table in unique.values():
            try:
                argument = build(table)
            except AblateError as exc:
                errors.append(_keyed(section, exc))
                continue
            except Exception as exc:  # a plugin's bug, named before any training instead of a traceback
                errors.append(f"{section}: {table.get('name')} could not be built ({type(exc).__name__}: {exc})")
                continue
            for i, plugin in checked:
                try:
                    plugin.check(argument)  # type: ignore[attr-defined]
                except AblateError as exc:
                    errors.append(_keyed(f"{kind}[{i}]", exc))
    return list(dict.fromkeys(errors))


def _device_error(name: str) -> str | None:
    """Why train.device cannot be used on this machine, or None: found here rather than when training starts."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        return f"train.device: {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"train.device: {name!r} but this machine has no CUDA device; use 'auto' or 'cpu'"
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return f"train.device: {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"train.device: {name!r} but this machine has no MPS device; use 'auto' or 'cpu'"
    if device.type not in ("cpu", "cuda", "mps"):
        return f"train.device: {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    return None


def _keyed(where: str, exc: AblateError) -> str:
    """'sampler[1].jump_at: message' from an error a plugin raised with key='jump_at' (or 'sampler.jump_at')."""
    message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
    key = (exc.key or "").removeprefix(where.split("[")[0] + ".")
    return f"{where}{'.' + key if key else ''}: {message}"


def _flatten_plugins(table: dict[str, Any]) -> dict[str, Any]:
    """An arm's entries: plugin sections stay whole tables, everything else becomes dotted keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key not in PLUGIN_SECTIONS:
            out.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            out[key] = value
    return out


def _option(registry: Registry, pairs: dict[str, Any], base: dict[str, Any], where: str) -> tuple[tuple[str, list[tuple[str, Any]]], list[str]]:
    """Validate one grid option (section -> plugin table, or dotted key -> value) and label it."""
    errors, resolved, labels = [], [], []
    for key, value in pairs.items():
        section = key.split(".")[0]
        if section not in base:
            errors.append(f"{where}: {key!r} is not under {', '.join(base)}")
        elif key in PLUGIN_SECTIONS:
            spec, errs = validate_plugin(registry, PLUGIN_SECTIONS[key], value, f"{where}.{key}" if len(pairs) > 1 else where)
            errors += errs
            if spec:
                labels.append(label(registry, PLUGIN_SECTIONS[key], spec))
                resolved.append((key, spec))
        else:
            labels.append(f"{key.split('.')[-1]}={value}")
            resolved.append((key, value))
    return (" + ".join(labels), resolved), errors


def _recheck(config: dict[str, Any], registry: Registry, axes: list[str]) -> list[str]:
    """Dotted grid values (e.g. model.ch) land inside plugin tables: validate the result again."""
    errors = []
    for section in {a.split(".")[0] for a in axes if "." in a} & set(PLUGIN_SECTIONS):
        config[section], errs = validate_plugin(registry, PLUGIN_SECTIONS[section], config[section], f"grid ({section})")
        errors += errs
    if "train" in {a.split(".")[0] for a in axes}:
        try:
            config["train"] = TrainConfig.model_validate(config["train"]).model_dump()
        except ValidationError as exc:
            errors += _errors(exc, "grid (train)")
    return errors


def _contrasts(tables: list[dict[str, Any]], cells: list[Cell], lists: dict[str, list[dict[str, Any]]],
               registry: Registry, file: str) -> list[dict[str, Any]]:
    """Validate the `[[contrast]]` tables against the expanded arms, the sampler labels and the metrics'
    declared keys; resolve the default sampler so the run's settings say exactly what was declared."""
    arms = list(dict.fromkeys(c.arm for c in cells))
    samplers = [label(registry, "sampler", s) for s in lists["sampler"]]
    metric_classes = [registry.get("metric", m["name"]) for m in lists["metric"]]
    declared = [cls.keys for cls in metric_classes]
    errors, resolved = [], []
    for i, table in enumerate(tables):
        try:
            spec = ContrastSpec.model_validate(table)
        except ValidationError as exc:
            errors += _errors(exc, f"contrast[{i}]")
            continue
        errors += [f"contrast[{i}].{e}" for e in check(spec, arms, [*samplers, REAL_DATA])]
        if declared and all(declared) and not any(cls.key_spec(spec.metric) for cls in metric_classes):
            keys = ", ".join(dict.fromkeys(k for d in declared for k in d))
            errors.append(f"contrast[{i}].metric: no metric of this study outputs {spec.metric!r}; declared keys: {keys}")
        if spec.over == "arm" and spec.sampler is None and samplers:
            spec = spec.model_copy(update={"sampler": samplers[0]})
        resolved.append(spec.model_dump())
    if errors:
        raise StudyError("invalid study:\n  " + "\n  ".join(errors), file=file)
    return resolved
