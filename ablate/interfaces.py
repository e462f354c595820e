"""The base class of every plugin kind, and the kinds table (`KINDS`) that declares each kind once.

A plugin is a class with a `name`, a nested pydantic `Params` model (unknown keys are
errors) and the methods of its kind; the core constructs it as `Plugin(params)`. The small
types passed between the core and the plugins (Data, Prediction, EvalContext, ...) are in
ablate.datatypes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from torch import Tensor, nn

from ablate.datatypes import (
    Data,
    DataSpec,
    Denoiser,
    EvalContext,
    KeySpec,
    NetworkDenoiser,
    Prediction,
    half_indices,
)
from ablate.diffusion import Diffusion

if TYPE_CHECKING:
    from ablate.tracking import TrackedCell


def neutral(default: Any, **kwargs: Any) -> Any:
    """A Params field that does not enter the cell key while it equals its default: a param added to a
    plugin later (with the behaviour before as its default) leaves every stored cell's key, and so its
    results, where they were. Use it in place of `Field(default, ...)`."""
    return Field(default, json_schema_extra={"neutral": True}, **kwargs)


def neutral_defaults(params: type[BaseModel]) -> dict[str, Any]:
    """The neutral fields of a Params model and their defaults, as a resolved study table holds them (JSON)."""
    return {name: to_jsonable_python(f.get_default(call_default_factory=True)) for name, f in params.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("neutral")}


class Plugin:
    """Base of every plugin: a name, validated Params, constructed as Plugin(params)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    # The methods a plugin of this kind must define (checked when it loads) and those it may define
    # (the core works without them); docs/writing-a-plugin.md lists the same, and a test compares them.
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{self.name}({args})"


class Schedule(Plugin):
    kind = "schedule"
    required = ("betas",)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        T: int = Field(1000, ge=2, description="number of diffusion steps")

    def betas(self, T: int) -> Tensor:
        raise NotImplementedError

    def diffusion(self) -> Diffusion:
        return Diffusion(self.betas(self.params.T))


class Target(Plugin):
    """What the network outputs, and how to turn that output back into (x0, eps)."""

    kind = "target"
    required = ("training_target", "to_prediction", "x0_error_scale")

    def training_target(self, diffusion: Diffusion, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def to_prediction(self, diffusion: Diffusion, x_t: Tensor, t: Tensor, output: Tensor) -> Prediction:
        raise NotImplementedError

    def x0_error_scale(self, diffusion: Diffusion, t: Tensor) -> Tensor:
        """s(t) [B], float64: |target error| = s(t) * |x0 error| at fixed x_t."""
        raise NotImplementedError


class Weighting(Plugin):
    """Per-sample weights w(t) on the target-space mean squared error."""

    kind = "weighting"
    required = ("weights",)

    def weights(self, diffusion: Diffusion, target: Target, t: Tensor) -> Tensor:
        raise NotImplementedError


class Sampler(Plugin):
    """Turns noise into samples with any denoiser; never knows which target was trained."""

    kind = "sampler"
    required = ("sample",)
    optional = ("nfe", "check")

    def sample(
        self, denoiser: Denoiser, diffusion: Diffusion, x: Tensor, t_start: int, generator: torch.Generator
    ) -> Tensor:
        raise NotImplementedError

    def nfe(self, diffusion: Diffusion, t_start: int) -> int | None:
        """Network evaluations one call of `sample` makes, or None when unknown: the core counts the
        calls itself and only uses this as the progress bar's total."""
        return None

    def check(self, diffusion: Diffusion) -> None:
        """Raise AblateError (key = the offending param) when the params cannot work with this
        diffusion; called for every schedule of the study before anything trains."""


class Model(Plugin):
    """Builds the network; `denoiser` wraps it with a target (the oracle overrides it).

    `denoiser(..., autocast=True)` asks for bf16 autocast (the evaluation on CUDA with `train.bf16`);
    a denoiser that is not a network (the exact oracle) may ignore it."""

    kind = "model"
    required = ("build",)
    optional = ("denoiser",)
    trainable: ClassVar[bool] = True

    def build(self, spec: DataSpec) -> nn.Module:
        raise NotImplementedError

    def denoiser(self, module: nn.Module, target: Target, diffusion: Diffusion, spec: DataSpec,
                 autocast: bool = False) -> Denoiser:
        return NetworkDenoiser(module, target, diffusion, autocast)


class Dataset(Plugin):
    """`load()` returns the whole dataset's splits; the core calls `splits()`, which applies `train_half`
    (every dataset whose Params subclass `Dataset.Params` gets it) and hands models the training split."""

    kind = "dataset"
    required = ("load",)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        train_half: Literal["a", "b"] | None = neutral(
            None, description="train on one of two disjoint halves of the training split (a fixed permutation, the "
            "same at every training seed); the held-out split is unchanged. Default: the whole training split")

    def load(self) -> Data:
        raise NotImplementedError

    def splits(self) -> Data:
        """What a cell trains on and is scored against: `load()`, then its training split halved (images and
        labels alike) when `train_half` is set, and that training split handed to models in `spec.train_split`."""
        data = self.load()
        half = getattr(self.params, "train_half", None)
        if half is not None:
            idx = half_indices(data.train.shape[0], half)
            labels = data.train_labels[idx] if data.train_labels is not None else None
            data = replace(data, train=data.train[idx], train_labels=labels)
        return replace(data, spec=replace(data.spec, train_split=data.train))


class Metric(Plugin):
    """Scores samples against real data; `needs_samples = False` for model diagnostics.

    `keys` declares the output keys (a key ending in "*" matches every key with that prefix);
    a key that is not declared is still stored and tabulated, with no "best" claim.
    `cheap = True` metrics are also evaluated at the intermediate steps of `eval.at_steps`.
    `compares_with`: the real split `evaluate` gets as `real`: the evaluation's reference split
    (held-out by default), or "train" for a metric about the training set (memorisation). Its
    real-data row scores the other split in place of samples.
    """

    kind = "metric"
    required = ("evaluate",)
    optional = ("check",)
    needs_samples: ClassVar[bool] = True
    compares_with: ClassVar[Literal["reference", "train"]] = "reference"
    keys: ClassVar[dict[str, KeySpec]] = {}
    cheap: ClassVar[bool] = False

    @classmethod
    def key_spec(cls, key: str) -> KeySpec | None:
        if key in cls.keys:
            return cls.keys[key]
        return next((spec for pattern, spec in cls.keys.items() if pattern.endswith("*") and key.startswith(pattern[:-1])), None)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        num_samples: int = Field(1000, ge=2, description="samples generated per sampler for this metric")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        raise NotImplementedError

    def check(self, spec: DataSpec) -> None:
        """Raise AblateError when this metric cannot score data like `spec`; called for every dataset
        of the study before anything trains (the data is loaded for it)."""


class Executor(Plugin):
    """Runs independent cells; `local` runs them one after another in this process."""

    kind = "executor"
    required = ("map",)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError


class Tracker(Plugin):
    """Mirrors a study's results to an experiment tracker (TensorBoard, MLflow). The results store stays
    the source of truth: after each cell the core hands every tracker what the store holds of that cell
    and the tracker has not logged yet; a tracker that raises is named on stderr and left out for the
    rest of the run, and the study goes on."""

    kind = "tracker"
    required = ("log_cell",)
    optional = ("open", "close")

    def open(self, study: str, runs_dir: Path) -> str:
        """Connect, once per run before the first cell; returns where it writes (a folder, a URI). What
        has been logged is recorded per tracker label and destination: a new destination gets everything."""
        return study

    def log_cell(self, cell: TrackedCell) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what `open` and `log_cell` hold, at the end of the run."""


@dataclass(frozen=True)
class Kind:
    """One plugin kind, declared once. The hookspecs, the registry, the study file's sections, the
    provenance a run records, a cell's `Parts` and key, and the exports of `ablate` are all derived from
    `KINDS`, so a new kind is a base class above and one row below (docs/writing-a-plugin.md, "Adding a kind")."""

    base: type[Plugin]  # every plugin of the kind subclasses it; its `kind` is the kind's name
    hook: str  # the pluggy hook that returns the plugin classes, e.g. "ablate_samplers"
    summary: str  # what the hook's classes do: the first line of its hookspec's docstring
    section: str  # the study file's section: [section] (one table) or [[section]] (many)
    many: bool = False  # a list of tables, each evaluated on every cell (samplers, metrics)
    cell: bool = False  # part of a training cell's config, so of its key and of `Parts`
    default: Any = None  # the section when a study leaves it out; None: the study must give it
    # with cell=True: a cell's key leaves the section out while it equals `default` (with its plugin's
    # defaults filled), so a kind added later whose default changes nothing moves no stored cell's key
    neutral: bool = False

    def __post_init__(self) -> None:
        if self.neutral and not (self.cell and isinstance(self.default, dict)):
            raise ValueError(f"kind {self.name!r}: neutral=True needs cell=True and a default table")

    @property
    def name(self) -> str:
        return self.base.kind


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(Schedule, "ablate_schedules", "Noise schedules: ``betas(T)``, the forward process's betas.",
         "schedule", cell=True, default={"name": "linear"}),
    Kind(Target, "ablate_targets", "Prediction targets: what the network outputs and how it becomes "
         "``Prediction(x0, eps)``.", "target", cell=True, default={"name": "epsilon"}),
    Kind(Weighting, "ablate_weightings", "Loss weightings: ``weights(diffusion, target, t)`` on the target-space MSE.",
         "weighting", cell=True, default={"name": "simple"}),
    Kind(Sampler, "ablate_samplers", "Samplers: ``sample(denoiser, diffusion, x, t_start, generator)``, noise to "
         "samples.", "sampler", many=True, default=[{"name": "ancestral"}]),
    Kind(Model, "ablate_models", "Models: ``build(spec)``, the network; ``denoiser(...)`` wraps it with a target.",
         "model", cell=True),
    Kind(Dataset, "ablate_datasets", "Datasets: ``load()``, the splits scaled to [-1, 1] and a ``DataSpec``.",
         "data", cell=True),
    Kind(Metric, "ablate_metrics", "Metrics: ``evaluate(samples, real, ctx)``, a ``{key: float}`` dict.",
         "metric", many=True, default=[]),
    Kind(Executor, "ablate_executors", "Executors: ``map(fn, cells)`` runs the independent training cells.",
         "executor", default={"name": "local"}),
    Kind(Tracker, "ablate_trackers", "Experiment trackers: ``log_cell(cell)`` mirrors a cell's stored results "
         "(TensorBoard, MLflow).", "tracker", many=True, default=[]),
)}

