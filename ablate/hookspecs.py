"""One pluggy hook per plugin kind; each returns a list of plugin classes."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ablate")
hookimpl = pluggy.HookimplMarker("ablate")

# hook name -> plugin kind
HOOKS: dict[str, str] = {
    "ablate_schedules": "schedule",
    "ablate_targets": "target",
    "ablate_weightings": "weighting",
    "ablate_samplers": "sampler",
    "ablate_models": "model",
    "ablate_datasets": "dataset",
    "ablate_metrics": "metric",
    "ablate_executors": "executor",
}


@hookspec
def ablate_schedules() -> list[type]:
    """Noise schedules: betas(T)."""


@hookspec
def ablate_targets() -> list[type]:
    """Prediction targets: what the network outputs."""


@hookspec
def ablate_weightings() -> list[type]:
    """Loss weightings w(t) on the target-space MSE."""


@hookspec
def ablate_samplers() -> list[type]:
    """Samplers: noise -> samples with any denoiser."""


@hookspec
def ablate_models() -> list[type]:
    """Models: build(data_spec) -> nn.Module."""


@hookspec
def ablate_datasets() -> list[type]:
    """Datasets: tensors in [-1, 1] and a spec."""


@hookspec
def ablate_metrics() -> list[type]:
    """Metrics: evaluate(samples, real, ctx) -> dict."""


@hookspec
def ablate_executors() -> list[type]:
    """Executors: run independent cells."""
