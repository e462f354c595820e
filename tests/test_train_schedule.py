"""The learning-rate schedule against its closed form, and that a setting added later leaves old cell keys alone."""

from __future__ import annotations

import math

from ablate.study import Cell
from ablate.train import learning_rate


def test_cosine_decay_matches_closed_form() -> None:
    tc = {"lr": 1e-3, "warmup": 10, "steps": 110, "lr_decay": "cosine"}
    assert learning_rate(tc, 0) == 1e-3 * 1 / 10  # warmup: linear from lr/warmup
    assert learning_rate(tc, 10) == 1e-3  # cos(0) = 1 at the first step after warmup
    assert math.isclose(learning_rate(tc, 60), 1e-3 * 0.5)  # halfway: cos(pi/2) = 0
    assert learning_rate(tc, 109) < 1e-3 * 0.01  # near 0 at the end
    assert learning_rate({**tc, "lr_decay": "none"}, 60) == 1e-3


def test_constant_schedule_keeps_the_old_cell_key() -> None:
    config = {"data": {"name": "digits"}, "seed": 0, "train": {"steps": 5, "lr": 1e-3, "log_every": 10}}
    with_default = {**config, "train": {**config["train"], "lr_decay": "none"}}
    with_cosine = {**config, "train": {**config["train"], "lr_decay": "cosine"}}
    assert Cell(with_default, "a", 0).key == Cell(config, "a", 0).key
    assert Cell(with_cosine, "a", 0).key != Cell(config, "a", 0).key
