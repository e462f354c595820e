"""Equivalence margins of declared contrasts: absolute, in the metric's units, or a multiple of the
real-data floor's spread over seeds.

Never a fraction of the baseline's value: that gives one question a different margin depending on which
arm is called the baseline (±446 one way, ±40 the other). The floor's spread is the metric's own noise at
that sample count (real images drawn afresh at each seed), so `margin_floor_sd = 2` reads "a difference
smaller than twice what re-drawing real images moves the metric by is no difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RELATIVE_REFUSED = ("a margin relative to the baseline's value is not accepted: the same question would get "
                    "another margin with the other arm as baseline. Delete `relative` and give an absolute "
                    "`margin` in the metric's units, or `margin_floor_sd = K` (K times the sd over seeds of the "
                    "metric's real-data floor), e.g. margin_floor_sd = 2.0")


@dataclass(frozen=True)
class Resolved:
    """A margin in the key's units and how it was set, in words; NaN, with the reason, when it cannot be resolved."""

    value: float
    how: str

    @property
    def usable(self) -> bool:
        return math.isfinite(self.value) and self.value > 0


@dataclass(frozen=True)
class Margin:
    """What a contrast declared: `absolute` (metric units) or `floor_sd` (a multiple of the floor's sd).
    `legacy` says why a margin recorded by an older run cannot be used (a relative one)."""

    absolute: float | None = None
    floor_sd: float | None = None
    legacy: str = ""

    def resolve(self, key: str, floor: Sequence[float]) -> Resolved:
        """The margin for one test; `floor`: the real-data floor's values of `key` over seeds, at the
        sample count of the values tested (the baseline arm's floor)."""
        if self.legacy:
            return Resolved(math.nan, self.legacy)
        if self.absolute is not None:
            return Resolved(self.absolute, "absolute, in the metric's units")
        assert self.floor_sd is not None  # ContrastSpec requires one of the two
        values = np.asarray([v for v in floor if v is not None and math.isfinite(v)], dtype=float)
        if len(values) < 2:
            return Resolved(math.nan, f"{self.floor_sd:g} × the sd of the real-data floor of {key} over seeds needs "
                            f"the floor at 2 seeds or more (found {len(values)})")
        sd = float(values.std(ddof=1))
        if values.min() == values.max():  # (numpy's sd of equal values can be 1e-17, not 0)
            return Resolved(math.nan, f"the real-data floor of {key} has the same value at all {len(values)} "
                            f"seeds (sd 0), so {self.floor_sd:g} × its sd is no margin; declare an absolute `margin`")
        return Resolved(self.floor_sd * sd, f"{self.floor_sd:g} × the sd over {len(values)} seeds of the real-data "
                        f"floor of {key} ({sd:.3g})")
