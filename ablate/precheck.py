"""The checks a study passes before anything trains, besides its schema: each sampler's `check` against
every schedule and each metric's against every dataset, the training device, and a schedule whose
end is not noise (a warning). Each problem is one line keyed like the study file.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch

from ablate.errors import AblateError, StudyError
from ablate.plugins import Registry, implements


def warn_if_not_noise(registry: Registry, schedule: dict[str, Any], file: str) -> None:
    """Sampling starts from N(0, I), which is only right when abar_T is close to 0."""
    name = registry.label("schedule", schedule)
    try:
        abar_T = float(registry.from_table("schedule", schedule).diffusion().alpha_bars[-1])
    except Exception as exc:  # a plugin's betas: say so before any training starts
        raise StudyError(f"schedule {name}: could not build its betas ({type(exc).__name__}: {exc})", file=file, key="schedule") from None
    if abar_T > 1e-3:
        warnings.warn(f"{file}: schedule {name} ends at abar_T = {abar_T:.3g} > 1e-3, so x_T "
                      "is far from the N(0, I) that sampling starts from; raise T or beta_end, keep linear's "
                      "scale_with_T = true, or use the cosine schedule", stacklevel=3)


def plugin_checks(registry: Registry, samplers: list[dict[str, Any]], metrics: list[dict[str, Any]],
                   schedules: list[dict[str, Any]], datasets: list[dict[str, Any]]) -> list[str]:
    """Ask each sampler about every schedule and each metric about every dataset (their optional
    `check` methods), so that a combination that cannot work fails before anything trains. A dataset
    is loaded only when some metric has a check."""
    errors: list[str] = []
    pairs = [("sampler", samplers, "schedule", schedules, lambda table: registry.from_table("schedule", table).diffusion()),
             ("metric", metrics, "data", datasets, lambda table: registry.from_table("dataset", table).splits().spec)]
    for kind, specs, section, tables, build in pairs:
        checked = [(i, registry.from_table(kind, spec)) for i, spec in enumerate(specs)
                   if spec and implements(registry.get(kind, spec["name"]), "check")]
        unique = {json.dumps(t, sort_keys=True): t for t in tables} if checked else {}
        for table in unique.values():
            try:
                argument = build(table)
            except AblateError as exc:
                errors.append(keyed(section, exc))
                continue
            except Exception as exc:  # a plugin's bug, named before any training instead of a traceback
                errors.append(f"{section}: {table.get('name')} could not be built ({type(exc).__name__}: {exc})")
                continue
            for i, plugin in checked:
                try:
                    plugin.check(argument)  # type: ignore[attr-defined]
                except AblateError as exc:
                    errors.append(keyed(f"{kind}[{i}]", exc))
    return list(dict.fromkeys(errors))


def device_error(name: str) -> str | None:
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


def keyed(where: str, exc: AblateError) -> str:
    """'sampler[1].jump_at: message' from an error a plugin raised with key='jump_at' (or 'sampler.jump_at')."""
    message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
    key = (exc.key or "").removeprefix(where.split("[")[0] + ".")
    return f"{where}{'.' + key if key else ''}: {message}"
