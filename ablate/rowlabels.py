"""The labels of stored rows that are not one sampler's evaluation: the final weights' step, model
diagnostics, real images scored like samples (the floor and the calibration ladder), a cell's own failure."""

from __future__ import annotations

FINAL = -1  # the `step` of an evaluation of the final weights
NO_SAMPLER = "-"  # the sampler of a model diagnostic (no samples drawn)
REAL_DATA = "real data (held-out)"  # the sampler of the floor: held-out images scored like samples (ablate.ladder)
# the samplers of the calibration ladder (ablate.ladder): training images degraded in known ways, scored like samples
LADDER = ("ladder: 10 copies", "ladder: 100 copies", "ladder: noise 0.1", "ladder: noise 0.3", "ladder: blur 1px",
          "ladder: class means")
REFERENCE_ROWS = (REAL_DATA, *LADDER)  # rows of real images scored like samples: no sampler, no NFE
CELL = "(cell)"  # the sampler and metric of a cell's own failure (loading its data, building its plugins, training)
