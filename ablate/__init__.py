"""ablate: plugin-based ablation studies for denoising diffusion models."""

from __future__ import annotations

import importlib
from typing import Any

from ablate.threads import passive_wait

passive_wait()  # before anything imports torch: OpenMP reads its wait policy once, when torch loads

from ablate.errors import AblateError, PluginError, StudyError  # noqa: E402
from ablate.hookspecs import hookimpl  # noqa: E402

# The torch-backed names load on first use, so that `ablate --help` and `--version` start without torch.
_LAZY = {name: "ablate.interfaces" for name in (
    "Data", "DataSpec", "Dataset", "Denoiser", "EvalContext", "Executor", "KeySpec", "Metric", "Mixture", "Model",
    "NetworkDenoiser", "Plugin", "Prediction", "Sampler", "Schedule", "Target", "Tracker", "Weighting")}
_LAZY |= {"Diffusion": "ablate.diffusion", "Registry": "ablate.plugins", "load_registry": "ablate.plugins",
          "TrackedCell": "ablate.tracking"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ablate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__version__ = "0.2.0"


def run_study(path, profile=None, overrides=(), executor=None, runs_dir="runs", progress=True, threads=None,
              trackers=()):
    """Train and evaluate every cell of a study; returns a pandas DataFrame of metric rows.

    threads: torch threads per process (default: this run's share of the cores, ablate.threads).
    trackers: experiment trackers to mirror the results to besides the study's own (`--track`)."""
    from ablate.runner import run_study as _run_study

    return _run_study(path, profile=profile, overrides=overrides, executor=executor, runs_dir=runs_dir,
                      progress=progress, threads=threads, trackers=trackers)


__all__ = [
    "AblateError", "Data", "DataSpec", "Dataset", "Denoiser", "Diffusion", "EvalContext", "Executor",
    "KeySpec", "Metric", "Mixture", "Model", "NetworkDenoiser", "Plugin", "PluginError", "Prediction", "Registry",
    "Sampler", "Schedule", "StudyError", "Target", "TrackedCell", "Tracker", "Weighting", "hookimpl", "load_registry", "run_study",
    "__version__",
]
