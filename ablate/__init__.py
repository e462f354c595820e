"""ablate: plugin-based ablation studies for denoising diffusion models."""

from ablate.diffusion import Diffusion
from ablate.errors import AblateError, PluginError, StudyError
from ablate.hookspecs import hookimpl
from ablate.interfaces import (
    Data,
    Dataset,
    DataSpec,
    Denoiser,
    EvalContext,
    Executor,
    KeySpec,
    Metric,
    Mixture,
    Model,
    NetworkDenoiser,
    Plugin,
    Prediction,
    Sampler,
    Schedule,
    Target,
    Weighting,
)
from ablate.plugins import Registry, load_registry

__version__ = "0.1.0"


def run_study(path, profile=None, overrides=(), executor=None, runs_dir="runs", progress=True):
    """Train and evaluate every cell of a study; returns a pandas DataFrame of metric rows."""
    from ablate.runner import run_study as _run_study

    return _run_study(path, profile=profile, overrides=overrides, executor=executor, runs_dir=runs_dir, progress=progress)


__all__ = [
    "AblateError", "Data", "DataSpec", "Dataset", "Denoiser", "Diffusion", "EvalContext", "Executor",
    "KeySpec", "Metric", "Mixture", "Model", "NetworkDenoiser", "Plugin", "PluginError", "Prediction", "Registry",
    "Sampler", "Schedule", "StudyError", "Target", "Weighting", "hookimpl", "load_registry", "run_study",
    "__version__",
]
