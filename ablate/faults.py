"""Fault isolation: a plugin that raises or returns a bad result costs only its own unit of work.

A unit is one evaluation (cell, sampler, metric, step, weights), or a cell's own work (loading its
data, building its plugins, training). A unit that fails is recorded in the store with the plugin at
fault, its origin and the error's last line, and the run goes on; `ablate run` lists the failures at
the end and exits 1, and a rerun retries them. Bad input and storage failures are not a plugin's
fault: they still stop the run (`error:`, exit 2), and so does Ctrl-C.
"""

from __future__ import annotations

import errno
import inspect
import math
import numbers
import os
import reprlib
import sqlite3
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ablate.errors import AblateError
from ablate.interfaces import Metric
from ablate.plugins import Registry
from ablate.store import CELL, FINAL, NO_SAMPLER, REFERENCE_ROWS

if TYPE_CHECKING:
    from ablate.store import Store

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
STORE_FAILURES = ("disk is full", "readonly", "unable to open", "disk i/o error", "locked")
TORCH_WRITE_FAILURES = ("PytorchStreamWriter", "unexpected pos", "file write failed")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40


def storage_failure(exc: BaseException) -> bool:
    """A full disk or an unwritable runs dir (ablate.runner.storage_errors makes it one `error:` line)."""
    if isinstance(exc, OSError):
        return exc.errno in WRITE_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in str(exc).lower() for s in STORE_FAILURES)
    if isinstance(exc, RuntimeError):  # torch.save writes through its own C++ writer, which loses the errno
        return any(s in str(exc) for s in TORCH_WRITE_FAILURES)
    return False


def isolated(exc: BaseException) -> bool:
    """Whether an exception fails only its unit: not bad input (AblateError), a storage failure or an interrupt."""
    return isinstance(exc, Exception) and not isinstance(exc, AblateError) and not storage_failure(exc)


class BadResult(ValueError):
    """A metric returned something other than a non-empty mapping of str keys to finite floats."""


def check_result(values: object) -> dict[str, float]:
    """A metric's return as {str: float}, or BadResult saying what is wrong. Numbers of any numeric type
    (int, numpy scalars, 0-d tensors) are fine when they convert to a finite float; bools are not."""
    if not isinstance(values, Mapping):
        raise BadResult(f"returned {_show(values)}, not a mapping of str keys to finite floats")
    if not values:
        raise BadResult("returned an empty mapping: nothing to store")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise BadResult(f"returned the key {_show(key)}, not a str")
        number = _finite(value)
        if number is None:
            raise BadResult(f"returned {key!r}: {_show(value)}, not a finite float")
        out[key] = number
    return out


def _finite(value: object) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
            return None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's bool_ is not a Real
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _show(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    return f"{type(value).__name__} {_short.repr(value)}" if value is not None else "None"


@dataclass(frozen=True)
class Failure:
    """Why a unit failed: the plugin at fault ('kind/name', '' when unknown), its origin, the error's last line
    and the full traceback (kept in the store for whoever debugs the plugin)."""

    plugin: str
    origin: str
    error: str
    traceback: str = ""

    def __str__(self) -> str:
        who = f"{self.plugin} ({self.origin})" if self.plugin else "unknown plugin"
        return f"{who}: {self.error}"


def origin_label(registry: Registry, kind: str, name: str) -> str:
    """'built-in', 'package==version' or the plugin file's path."""
    origin = registry.origin(kind, name)
    if origin.source == "file":
        return origin.label
    return f"{origin.label}=={origin.version}" if origin.source == "package" else "built-in"


def last_line(exc: BaseException) -> str:
    """'ValueError: boom': the exception's type and the last line of its message, as a traceback ends."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[-1].strip()}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def blame(exc: BaseException, registry: Registry, suspects: list[tuple[str, str]],
          default: tuple[str, str] | None = None) -> Failure:
    """The failure named after the plugin whose code the traceback ends in (innermost frame first: a method
    of the plugin, else its file), among `suspects` ((kind, name) pairs, the first preferred where several
    share a file); else `default`, e.g. the metric whose return value was bad, or no plugin (unknown)."""
    classes = {pair: registry.get(*pair) for pair in dict.fromkeys(suspects)}
    files: dict[str, tuple[str, str]] = {}
    for pair, cls in classes.items():
        try:
            files.setdefault(os.path.realpath(inspect.getfile(cls)), pair)
        except TypeError:  # a class defined where no file is known
            continue
    found = default
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        owner = type(frame.f_locals.get("self"))
        hit = next((pair for pair, cls in classes.items() if owner is cls), None) \
            or files.get(os.path.realpath(frame.f_code.co_filename))
        if hit:
            found = hit
            break
    text = "".join(traceback.format_exception(exc))
    if found is None:
        return Failure("", "", last_line(exc), text)
    return Failure(f"{found[0]}/{found[1]}", origin_label(registry, *found), last_line(exc), text)


@dataclass
class Units:
    """The units of one evaluation of a cell's weights: each result stored, or its failure recorded.
    `suspects`: the cell's own plugins, blamed when the traceback ends in their code."""

    store: Store
    key: str
    registry: Registry
    suspects: list[tuple[str, str]]
    step: int = FINAL
    weights: str = "ema"

    def __post_init__(self) -> None:
        self.summary: list[str] = []

    def score(self, sampler: str, label: str, metric: Metric, inputs: tuple[Any, ...], count: int,
              nfe: int | None, seconds: float | None = None) -> bool:
        """Run one evaluation, `metric.evaluate(*inputs)`, and store its values or its failure;
        seconds: the time to report (None: the time the metric took). True when stored."""
        t0 = time.time()
        try:
            values = check_result(metric.evaluate(*inputs))
        except Exception as exc:
            if not isolated(exc):
                raise
            self.fail([(sampler, label)], exc, ("metric", metric.name))
            return False
        self.store.add_metric(self.key, sampler, label, values, count, nfe,
                              time.time() - t0 if seconds is None else seconds, self.step, self.weights)
        main = next(iter(values.items()))
        self.summary.append(f"{sampler if sampler != NO_SAMPLER else label} {main[0]}={main[1]:.4g}{self._where()}")
        return True

    def fail(self, units: list[tuple[str, str]], exc: BaseException, culprit: tuple[str, str], what: str = "") -> None:
        """Record the failure of every (sampler, metric label) in `units`, blamed on `culprit` unless the
        traceback ends in another of the cell's plugins; `what` names the work when no unit was left to do."""
        failure = blame(exc, self.registry, [culprit, *self.suspects], culprit)
        for sampler, label in units:
            self.store.add_failure(self.key, sampler, label, failure, self.step, self.weights)
        names = ", ".join([unit_name(*units[0]), *(m for _, m in units[1:])]) if units else what
        self.summary.append(f"FAILED {names}{self._where()}: {failure}")

    def _where(self) -> str:
        return "" if self.step == FINAL and self.weights == "ema" else f" [{self.weights} step {self.step}]"


def unit_name(sampler: str, metric: str, step: int = FINAL, weights: str = "ema") -> str:
    """How a summary line names a unit: 'sampler ddim, metric fid', 'metric x0_error_by_t (no sampler)', ..."""
    if sampler == CELL:
        return "the cell (data, plugins, training)"
    where = "" if step == FINAL and weights == "ema" else (f" at step {step}" if step != FINAL else "") + \
        (f" ({weights} weights)" if weights != "ema" else "")
    if sampler == NO_SAMPLER:
        return f"metric {metric} (no sampler){where}"
    if sampler in REFERENCE_ROWS:
        return f"metric {metric} on {sampler}{where}"
    return f"sampler {sampler}, metric {metric}{where}"


def failure_lines(rows: list[dict[str, Any]], store_path: str) -> list[str]:
    """What `ablate run` prints at the end: one line per failed unit (arm, seed, unit, plugin, origin, error)."""
    if not rows:
        return []
    lines = [f"FAILED {r['arm']} seed {r['seed']}, {unit_name(r['sampler'], r['metric'], r['step'], r['weights'])}: "
             f"{Failure(r['plugin'], r['origin'], r['error'])}" for r in rows]
    return [f"{len(rows)} unit(s) of work failed; the other results are stored. Fix the plugin and rerun the same "
            f"command to retry them (full tracebacks: the `failures` table of {store_path}):", *lines]
