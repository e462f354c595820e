"""ablate: plugin-based ablation studies for denoising diffusion models."""

from __future__ import annotations

import importlib
from typing import Any

from ablate.threads import passive_wait

passive_wait()  # before anything imports torch: OpenMP reads its wait policy once, when torch loads

from ablate.errors import AblateError, PluginError, StudyError  # noqa: E402, F401  (exported: __all__)
from ablate.hookspecs import hookimpl  # noqa: E402, F401  (exported: __all__)

# The torch-backed names load on first use, so that `ablate --help` and `--version` start without torch.
# The base class of every plugin kind (Sampler, Metric, ...) comes from the kinds table itself
# (ablate.interfaces.KINDS), so a new kind's row exports its base class with no edit here.
_LAZY = {name: "ablate.datatypes" for name in (
    "Data", "DataSpec", "Denoiser", "EvalContext", "KeySpec", "Mixture", "NetworkDenoiser", "Prediction")}
_LAZY |= {"Plugin": "ablate.interfaces", "Diffusion": "ablate.diffusion", "Registry": "ablate.plugins",
          "load_registry": "ablate.plugins", "TrackedCell": "ablate.tracking"}
_EAGER = ["AblateError", "PluginError", "StudyError", "hookimpl", "run_study", "__version__"]


def _kind_bases() -> dict[str, type]:
    """Base class name -> base class of every row of the kinds table (imports torch)."""
    from ablate.interfaces import KINDS

    return {kind.base.__name__: kind.base for kind in KINDS.values()}


def __getattr__(name: str) -> Any:
    if name == "__all__":  # every public name: the kinds' base classes are read from the table when asked
        return sorted({*_EAGER, *_LAZY, *_kind_bases()})
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    bases = _kind_bases() if name[:1].isupper() else {}
    if name in bases:  # not cached: the table is the one place a kind is declared (a test may add a row)
        return bases[name]
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


__version__ = "0.2.0"


def run_study(path, profile=None, overrides=(), executor=None, runs_dir="runs", progress=True, threads=None,
              trackers=()):
    """Train and evaluate every cell of a study; returns a pandas DataFrame of metric rows.

    threads: torch threads per process (default: this run's share of the cores, ablate.threads).
    trackers: experiment trackers to mirror the results to besides the study's own (`--track`)."""
    from ablate.runner import run_study as _run_study

    return _run_study(path, profile=profile, overrides=overrides, executor=executor, runs_dir=runs_dir,
                      progress=progress, threads=threads, trackers=trackers)
