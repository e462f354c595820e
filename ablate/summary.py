"""The table `ablate run` ends with: one row per arm x sampler, each metric's headline keys as `mean ± sd (n=seeds)`,
in at most 120 columns. The report has the rest (intervals, tests, diagnostics, curves); this only says how it went."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ablate.datatypes import declared_spec
from ablate.store import REAL_DATA

WIDTH = 120  # a terminal's columns
NAME_WIDTH = 34  # longest arm or sampler name shown whole; longer ones end in "…" when the table would not fit
EVERY_ARM = "(every arm)"  # the floor's arm when it is the same for every arm, as the report names it


def headline_keys(frame: pd.DataFrame, declared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The keys declared with role "headline" (a key no metric declares counts as one, as in the report),
    in the order the metrics wrote them."""
    keys = dict.fromkeys(frame.key)
    return [k for k in keys if (declared_spec(declared, k) or {"role": "headline"})["role"] == "headline"]


def _number(x: float) -> str:
    """Three significant digits, four from 1000 on (as the report rounds), so 2228 does not read 2.23e+03."""
    return "–" if not math.isfinite(x) else f"{x:.3g}" if abs(x) < 1000 else f"{x:.4g}"


def _cell(values: Sequence[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return _number(values[0])
    return f"{_number(statistics.fmean(values))} ± {_number(statistics.stdev(values))} (n={len(values)})"


def summary_rows(frame: pd.DataFrame, declared: Mapping[str, Mapping[str, Any]],
                 arms: Sequence[str] = ()) -> tuple[list[str], list[list[str]]]:
    """The header (arm, sampler, the headline keys) and one row per arm x sampler: arms in the order given (then
    any other), samplers most network evaluations first as in the report, the real-data floor last and once
    when it reads the same for every arm."""
    keys = headline_keys(frame, declared)
    rows = frame[frame.key.isin(keys)]
    order = list(dict.fromkeys([*arms, *rows.arm]))
    nfe = rows.groupby("sampler").nfe.max().fillna(0) if "nfe" in rows else pd.Series(dtype=float)
    samplers = sorted(set(rows.sampler) - {REAL_DATA}, key=lambda s: (-nfe.get(s, 0), s))
    groups = [(arm, s) for arm in order for s in samplers] + [(arm, REAL_DATA) for arm in order]
    table = []
    for arm, sampler in groups:
        sub = rows[(rows.arm == arm) & (rows.sampler == sampler)]
        if len(sub):
            table.append([arm, sampler, *(_cell(sub[sub.key == k].value.tolist()) for k in keys)])
    floors = [r for r in table if r[1] == REAL_DATA]
    if len(floors) > 1 and all(r[2:] == floors[0][2:] for r in floors):
        table = [r for r in table if r[1] != REAL_DATA] + [[EVERY_ARM, *floors[0][1:]]]
    return ["arm", "sampler", *keys], table


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(header: list[str], rows: list[list[str]], width: int = WIDTH) -> list[str]:
    """Plain columns two spaces apart; the metric columns in blocks that each fit `width`, every block
    repeating the arm and sampler; names cut short only if one metric column beside them would not fit."""
    def widths(cols: list[int], table: list[list[str]]) -> list[int]:
        return [max(len(r[c]) for r in table) for c in cols]

    table = [header, *rows]
    names = widths([0, 1], table)
    if sum(names) + 4 + max(widths(list(range(2, len(header))), table) or [0]) > width:
        table = [[_shorten(r[0], NAME_WIDTH), _shorten(r[1], NAME_WIDTH), *r[2:]] for r in table]
        names = widths([0, 1], table)
    blocks: list[list[int]] = [[]]
    used = sum(names) + 2
    for col, w in zip(range(2, len(header)), widths(list(range(2, len(header))), table), strict=True):
        if blocks[-1] and used + 2 + w > width:
            blocks.append([])
            used = sum(names) + 2
        blocks[-1].append(col)
        used += 2 + w
    lines = []
    for block in blocks:
        cols = [0, 1, *block]
        ws = widths(cols, table)
        if lines:
            lines.append("")  # a blank line between blocks
        lines += ["  ".join(r[c].ljust(w) for c, w in zip(cols, ws, strict=True)).rstrip() for r in table]
    return lines


def print_summary(frame: pd.DataFrame, declared: Mapping[str, Mapping[str, Any]], arms: Sequence[str] = ()) -> None:
    """What `ablate run` prints at its end."""
    header, rows = summary_rows(frame, declared, arms)
    if not rows:
        print("no headline results" if len(frame) else "no results")
        return
    print("mean ± sd over seeds (n = seeds); `ablate report` gives 95% intervals, tests and the other metrics:")
    print("\n".join(render(header, rows)))
