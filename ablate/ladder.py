"""The calibration ladder and the floor: real images scored like samples, so every number has a scale.

A distribution metric on its own says little: is a KID of 0.4 good? The ladder answers with known
answers, each scored by every sample metric at its own sample count against the same reference as
the samples (rows of the store with the sampler labels of `ablate.store.LADDER`):

- `ladder: 10 copies`, `ladder: 100 copies`: k distinct training images, each repeated to fill the
  count. A model that memorised k images. `nearest_neighbour`'s `close_copies` flags them; a
  distribution metric may not.
- `ladder: noise 0.1`, `ladder: noise 0.3`: training images plus Gaussian pixel noise of that sd (on
  the [-1, 1] scale), clamped and quantised as saved. Worse as the sd grows.
- `ladder: blur 1px`: training images blurred by a Gaussian of sd 1 pixel (kernel 2 * ceil(3 sd) + 1,
  reflected at the border).
- `ladder: class means`: each sample replaced by the mean training image of its class (labelled data only).

Rungs are drawn once per cell from the training split with a generator seeded by the cell's seed (so
seeds give independent draws), and only for image data. The floor (`real data (held-out)`) is the bottom
rung: one half of the held-out split scored against the other half, so that no image a model was trained
on can reach it (`floor`). The halves are drawn by the cell's seed too, the same for every arm at a seed:
at half the count one halving is noisy (digits, KID: sd 0.03 over 8 halvings around a mean of 0.005), and
the mean over seeds averages that out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ablate.datatypes import Data
from ablate.store import LADDER

Make = Callable[[Tensor, "Tensor | None", int, torch.Generator], Tensor]


@dataclass(frozen=True)
class Rung:
    """One rung: how to make n images from the training split (as saved) and its labels."""

    make: Make
    needs_labels: bool = False


def draw(count: int, n: int, gen: torch.Generator) -> Tensor:
    """n indices into `count` items: distinct while n <= count, then every item again in a new order."""
    return torch.cat([torch.randperm(count, generator=gen) for _ in range(math.ceil(n / count))])[:n]


def copies(k: int) -> Make:
    def make(train: Tensor, labels: Tensor | None, n: int, gen: torch.Generator) -> Tensor:
        chosen = draw(train.shape[0], min(k, train.shape[0]), gen)
        return train[chosen[torch.arange(n) % chosen.numel()]]
    return make


def noisy(sd: float) -> Make:
    def make(train: Tensor, labels: Tensor | None, n: int, gen: torch.Generator) -> Tensor:
        x = train[draw(train.shape[0], n, gen)]
        return x + sd * torch.randn(x.shape, generator=gen)
    return make


def blurred(sd: float) -> Make:
    def make(train: Tensor, labels: Tensor | None, n: int, gen: torch.Generator) -> Tensor:
        from torchvision.transforms.functional import gaussian_blur

        size = 2 * math.ceil(3 * sd) + 1
        return gaussian_blur(train[draw(train.shape[0], n, gen)], [size, size], [sd, sd])
    return make


def class_means(train: Tensor, labels: Tensor | None, n: int, gen: torch.Generator) -> Tensor:
    assert labels is not None
    chosen = labels[draw(train.shape[0], n, gen)]
    means = torch.stack([train[labels == c].mean(0) if (labels == c).any() else train.mean(0)
                         for c in range(int(labels.max()) + 1)])
    return means[chosen]


RUNGS: dict[str, Rung] = dict(zip(LADDER, (Rung(copies(10)), Rung(copies(100)), Rung(noisy(0.1)), Rung(noisy(0.3)),
                                           Rung(blurred(1.0)), Rung(class_means, needs_labels=True)), strict=True))


def labels(data: Data) -> list[str]:
    """The rungs this data gets: none for points, `class means` only with labels."""
    if not data.spec.is_image:
        return []
    return [label for label, rung in RUNGS.items() if data.train_labels is not None or not rung.needs_labels]


def generator(seed: int, tag: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(hashlib.sha256(repr((seed, tag)).encode()).hexdigest()[:15], 16))


def build(data: Data, n: int, seed: int, save: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """Each rung of `labels(data)` as n images, as saved (`save`: clamped and quantised), drawn with a
    generator seeded by (seed, rung)."""
    train = save(data.train)
    return {label: save(RUNGS[label].make(train, data.train_labels, n, generator(seed, label))) for label in labels(data)}


def halves(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of the held-out split's two halves, drawn by `seed` (the first gets the odd one)."""
    perm = torch.randperm(count, generator=generator(seed, "floor"))
    return perm[: (count + 1) // 2], perm[(count + 1) // 2:]


def floor(test: Tensor, train: Tensor, compares_with_train: bool, seed: int) -> tuple[Tensor, Tensor]:
    """The floor's (samples, reference): held-out images, which no model trained on, in place of samples.
    Against the training split when the metric compares with it (or `eval.reference = "train"`), else one
    half of the held-out split against the other (so at about half its count)."""
    if compares_with_train:
        return test, train
    first, second = halves(test.shape[0], seed)
    return test[first], test[second]
