"""What training, evaluation and the executors share about one cell: its device and its plugins."""

from __future__ import annotations

from typing import Any

import torch

from ablate.interfaces import KINDS, Dataset, Model, Plugin, Schedule, Target, Weighting
from ablate.plugins import Registry


def pick_device(name: str) -> torch.device:
    """train.device: 'auto' is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Parts:
    """The plugins of one training cell by kind (every kind with `cell=True`): parts.model, parts.target, ..."""

    dataset: Dataset
    model: Model
    schedule: Schedule
    target: Target
    weighting: Weighting

    def __init__(self, **plugins: Plugin) -> None:
        self.__dict__.update(plugins)

    @classmethod
    def from_config(cls, registry: Registry, config: dict[str, Any]) -> Parts:
        return cls(**{k.name: registry.from_table(k.name, config[k.section]) for k in KINDS.values() if k.cell})
