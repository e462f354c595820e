"""One pluggy hook per plugin kind; each returns a list of plugin classes.

Each implementation is called once per :func:`ablate.load_registry`, with no arguments, and on its
own: every plugin's list counts (no hook is ``firstresult``) and one that raises is reported with its
origin instead of stopping the others. The lists are merged into one registry per kind, keyed by each
class's ``name``:

- two classes with one name, from any two origins (built-in, package, file), are an error;
- a class that is not a subclass of the kind's base, has no ``name`` or ``Params``, or leaves out a
  method in its base's ``required``, rejects the plugin that returned it, as does a hook that raises
  or returns something else than a list: an error for a local file the user named, a warning for an
  installed package (the other plugins still load).

Return classes, not instances: the core constructs ``cls(cls.Params.model_validate(table))`` for
each study table that names one.
"""

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
    """Noise schedules: ``betas(T)``, the forward process's betas.

    :return: subclasses of :class:`ablate.Schedule` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_targets() -> list[type]:
    """Prediction targets: what the network outputs and how it becomes ``Prediction(x0, eps)``.

    :return: subclasses of :class:`ablate.Target` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_weightings() -> list[type]:
    """Loss weightings: ``weights(diffusion, target, t)`` on the target-space MSE.

    :return: subclasses of :class:`ablate.Weighting` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_samplers() -> list[type]:
    """Samplers: ``sample(denoiser, diffusion, x, t_start, generator)``, noise to samples.

    :return: subclasses of :class:`ablate.Sampler` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_models() -> list[type]:
    """Models: ``build(spec)``, the network; ``denoiser(...)`` wraps it with a target.

    :return: subclasses of :class:`ablate.Model` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_datasets() -> list[type]:
    """Datasets: ``load()``, the splits scaled to [-1, 1] and a ``DataSpec``.

    :return: subclasses of :class:`ablate.Dataset` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_metrics() -> list[type]:
    """Metrics: ``evaluate(samples, real, ctx)``, a ``{key: float}`` dict.

    :return: subclasses of :class:`ablate.Metric` (merged with every other plugin's by ``name``).
    """


@hookspec
def ablate_executors() -> list[type]:
    """Executors: ``map(fn, cells)`` runs the independent training cells.

    :return: subclasses of :class:`ablate.Executor` (merged with every other plugin's by ``name``).
    """
