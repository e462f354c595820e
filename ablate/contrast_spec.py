"""A study's declared contrasts as written: the `[[contrast]]` table (`ContrastSpec`, with its declared
mechanism reading), checked against the study's arms and samplers, and expanded into the concrete
tests (`Comparison`: one per compared label). ablate.contrasts analyses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ablate.margins import RELATIVE_REFUSED, Margin

Group = tuple[str, str]  # (arm, sampler)


class Mechanism(BaseModel):
    """A contrast's declared reading of a diagnostic key: which ratio of the compared group's mean to the
    baseline's means which mechanism (a ratio, so a baseline that is itself off, e.g. a poor model's
    ancestral samples, does not read as the mechanism of the difference). Declared before the run like the
    contrast, so the report's mechanism sentence is computed, never chosen afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(..., description="the diagnostic output key read (e.g. 'spread_ratio')")
    below: float = Field(..., description="compared mean / baseline mean below this value means `below_means`")
    below_means: str = Field(..., description="e.g. 'regression to the mean'")
    above: float = Field(..., description="compared mean / baseline mean above this value means `above_means`")
    above_means: str = Field(..., description="e.g. 'error amplification'")

    @model_validator(mode="after")
    def _ordered(self) -> Mechanism:
        if self.below > self.above:
            raise ValueError(f"below ({self.below}) must not exceed above ({self.above})")
        return self

    def reading(self, baseline: float, compared: float) -> str:
        if baseline == 0:
            return "not read (the baseline's mean is 0)"
        value = compared / baseline
        if value < self.below:
            return self.below_means
        if value > self.above:
            return self.above_means
        return f"neither (between {self.below:g} and {self.above:g})"


class ContrastSpec(BaseModel):
    """One `[[contrast]]` table of a study file."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(..., description="the metric output key compared (e.g. 'kid', 'fid')")
    baseline: str = Field(..., description="an arm label (over = 'arm') or a sampler label (over = 'sampler')")
    compare: list[str] = Field(..., min_length=1, description="labels compared with the baseline, one test each")
    over: Literal["arm", "sampler"] = Field("arm", description="whether the labels are arms or samplers")
    sampler: str | None = Field(None, description="over = 'arm': the sampler compared under (default: the first)")
    arm: str | None = Field(None, description="over = 'sampler': the arm compared within (default: every arm)")
    margin: float | None = Field(None, gt=0, description="equivalence margin of the TOST, in the metric's units")
    margin_floor_sd: float | None = Field(None, gt=0, description="the margin as this multiple of the sd over seeds "
                                          "of the metric's real-data floor (instead of `margin`; resolved by the report)")
    relative: bool | None = Field(None, exclude=True, description="refused when true: a margin is never a fraction "
                                  "of the baseline's value")
    name: str = Field("", description="a label for the report")
    expected: Literal["better", "worse", "equivalent"] | None = Field(
        None, description="what a prior finding says of `compare` against `baseline`; the report says whether this agrees")
    source: str = Field("", description="where the prior finding is from (e.g. 'Ho et al. 2020')")
    mechanism: Mechanism | None = Field(None, description="a diagnostic key whose value names the mechanism behind "
                                        "the difference (the report computes the sentence from it)")

    @field_validator("relative")
    @classmethod
    def _not_relative(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(RELATIVE_REFUSED)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContrastSpec:
        if (self.margin is None) == (self.margin_floor_sd is None):
            raise ValueError("give the equivalence margin as exactly one of `margin` (absolute, in the metric's units) "
                             "and `margin_floor_sd` (a multiple of the sd over seeds of the metric's real-data floor)")
        if self.over == "arm" and self.arm is not None:
            raise ValueError("`arm` is for over = \"sampler\"; a contrast of arms picks its sampler with `sampler`")
        if self.over == "sampler" and self.sampler is not None:
            raise ValueError("`sampler` is for over = \"arm\"; a contrast of samplers picks its arm with `arm`")
        if self.baseline in self.compare:
            raise ValueError(f"compare lists the baseline {self.baseline!r}")
        if len(set(self.compare)) != len(self.compare):
            raise ValueError("compare lists a label twice")
        return self


def check(spec: ContrastSpec, arms: Sequence[str], samplers: Sequence[str]) -> list[str]:
    """Errors ('baseline: no arm ...') for labels that are not in the study; keys relative to the spec."""
    kind, known = ("arm", arms) if spec.over == "arm" else ("sampler", samplers)
    listing = f"{kind}s: {', '.join(known)}"
    errors = [f"baseline: no {kind} {spec.baseline!r} in this study; {listing}"] if spec.baseline not in known else []
    errors += [f"compare[{i}]: no {kind} {c!r} in this study; {listing}" for i, c in enumerate(spec.compare) if c not in known]
    if spec.sampler is not None and spec.sampler not in samplers:
        errors.append(f"sampler: no sampler {spec.sampler!r} in this study; samplers: {', '.join(samplers)}")
    if spec.arm is not None and spec.arm not in arms:
        errors.append(f"arm: no arm {spec.arm!r} in this study; arms: {', '.join(arms)}")
    return errors


@dataclass(frozen=True)
class Comparison:
    """One concrete test: the compare group against the baseline group, on one key."""

    key: str
    baseline: Group
    compare: Group
    margin: Margin
    name: str = ""
    expected: str | None = None
    source: str = ""
    mechanism: Mechanism | None = None

    @property
    def title(self) -> str:
        (b_arm, b_sampler), (c_arm, c_sampler) = self.baseline, self.compare
        if b_sampler == c_sampler:
            return f"{c_arm} vs {b_arm} ({self.key}, {b_sampler})"
        return f"{c_sampler} vs {b_sampler} ({self.key}, {b_arm})"


def spec_of(raw: ContrastSpec | Mapping[str, Any]) -> tuple[ContrastSpec, Margin]:
    """The spec and its margin. A run recorded before relative margins were refused may hold one: its
    report tests no equivalence for it and says why."""
    if isinstance(raw, ContrastSpec):
        return raw, Margin(raw.margin, raw.margin_floor_sd)
    table = dict(raw)
    if table.pop("relative", False):
        spec = ContrastSpec.model_validate(table)
        return spec, Margin(legacy=f"the margin was declared as {spec.margin:g} × the baseline's mean, a relative margin, "
                                   "which is no longer used (rerun with an absolute `margin` or `margin_floor_sd`)")
    spec = ContrastSpec.model_validate(table)
    return spec, Margin(spec.margin, spec.margin_floor_sd)


def expand(specs: Iterable[ContrastSpec | Mapping[str, Any]], arms: Sequence[str], samplers: Sequence[str]) -> list[Comparison]:
    """Concrete tests: one per compared label, and one per arm for a sampler contrast without `arm`."""
    out = []
    for raw in specs:
        spec, margin = spec_of(raw)
        if spec.over == "arm":
            sampler = spec.sampler if spec.sampler is not None else samplers[0]
            pairs = [((spec.baseline, sampler), (c, sampler)) for c in spec.compare]
        else:
            within = [spec.arm] if spec.arm is not None else list(arms)
            pairs = [((a, spec.baseline), (a, c)) for a in within for c in spec.compare]
        out += [Comparison(spec.metric, b, c, margin, spec.name, spec.expected, spec.source, spec.mechanism)
                for b, c in pairs]
    return out
