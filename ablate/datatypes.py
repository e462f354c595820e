"""The small types passed between the core and the plugins: a denoiser's prediction, the data and its
spec, what a metric is handed, what a metric's output keys mean. The plugin kinds' base classes are
in ablate.interfaces; `ablate` exports both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor, nn

from ablate.diffusion import Diffusion

if TYPE_CHECKING:
    from ablate.interfaces import Target


@dataclass(frozen=True)
class Prediction:
    """A denoiser's estimate of the clean data and of the noise, whatever the network outputs."""

    x0: Tensor
    eps: Tensor


class Denoiser(Protocol):
    """The seam between training and sampling: (x_t [B, ...], t LongTensor[B]) -> Prediction."""

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction: ...


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture with diagonal covariances: weights [K], means [K, D], stds [K, D]."""

    weights: Tensor
    means: Tensor
    stds: Tensor


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data: one sample's shape and what it is."""

    name: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    mixture: Mixture | None = None
    lift: Tensor | None = None  # float64 [D, d], orthonormal columns: data = lift @ z with z ~ mixture (gmm_lifted)
    # the training split as the cell uses it (after `train_half`), set by `Dataset.splits()`: for denoisers
    # built from the data itself (empirical_oracle); None from a bare `load()`
    train_split: Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


@dataclass
class Data:
    """A dataset's splits, scaled to [-1, 1] for images; labels where the dataset has them."""

    train: Tensor
    test: Tensor
    spec: DataSpec
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None


def as_saved(x: Tensor, spec: DataSpec) -> Tensor:
    """What a PNG of the samples would hold: images clamped to [-1, 1] and quantised to 8-bit levels.
    Other data (points) has no fixed range and is scored as it is."""
    if not spec.is_image:
        return x.float()
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


HALF_SEED = 0  # the permutation that splits a training split into halves: its own seed, not the training seed


def half_indices(n: int, half: str) -> Tensor:
    """The indices of half "a" (the first n // 2 of a fixed permutation) or "b" (the rest) of n training
    examples, in their original order: disjoint, together all n, the same at every call and training seed."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HALF_SEED))
    part = perm[: n // 2] if half == "a" else perm[n // 2:]
    return part.sort().values


@dataclass
class EvalContext:
    """What the core hands a metric besides the samples and the real data."""

    data: Data
    denoiser: Denoiser
    diffusion: Diffusion
    device: torch.device
    cache_dir: Path
    generator: torch.Generator
    extra: dict[str, Any] = field(default_factory=dict)


REFERENCE = "reference"  # EvalContext.extra key: the evaluation's reference split as saved (features are standardised by it)


@dataclass(frozen=True)
class KeySpec:
    """What one output key of a metric means, so reports need no table of metric names.

    direction: which way is better ("none": no "best" claim); role: "headline" (the number a
    comparison is made on), "curve" (one point of a per-t curve) or "diagnostic";
    nonnegative: intervals of this key are kept at or above zero.
    """

    direction: Literal["lower", "higher", "none"] = "none"
    role: Literal["headline", "curve", "diagnostic"] = "diagnostic"
    nonnegative: bool = False
    description: str = ""
    unit: str = ""  # what one unit of this key is


def declared_spec(declared: Mapping[str, Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The declaration of `key` among a run's recorded declarations (metric label -> {key or "prefix*": KeySpec
    as a dict}), or None when no metric declares it."""
    for keys in declared.values():
        for pattern, spec in keys.items():
            if pattern == key or (pattern.endswith("*") and key.startswith(pattern[:-1])):
                return spec
    return None


class NetworkDenoiser:
    """A trained network + its target: outputs in target space, Prediction out."""

    def __init__(self, module: nn.Module, target: Target, diffusion: Diffusion, autocast: bool = False) -> None:
        self.module, self.target, self.diffusion, self.autocast = module, target, diffusion, autocast

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        if self.autocast:
            with torch.autocast(x_t.device.type, dtype=torch.bfloat16):
                output = self.module(x_t, t)
        else:  # a disabled autocast context still costs microseconds per call
            output = self.module(x_t, t)
        return self.target.to_prediction(self.diffusion, x_t, t, output.to(x_t.dtype))
