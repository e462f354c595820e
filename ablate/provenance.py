"""What a study's results rest on: the plugins (and evaluation settings) each cell and each evaluation
records, and what a run records about its own plugins and metrics.

The driver (ablate.runner), a worker (ablate.worker), one cell's run (ablate.cellrun) and the dry run
(ablate.plan) all derive identities from here, so they agree on what makes a result stale.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ablate import halves
from ablate.identity import plugin_identity
from ablate.interfaces import KINDS
from ablate.study import Cell, EvalConfig, Study

EVAL_METHOD = ("reference", "clip_x0")  # eval settings that change what the stored numbers mean
EVAL_DEFAULTS = EvalConfig().model_dump()


def cell_plugins(study: Study, cell: Cell) -> dict[str, str]:
    """'kind/name' -> identity of the plugins that train a cell (every kind with `cell=True`)."""
    names = ((k.name, cell.config[k.section]["name"]) for k in KINDS.values() if k.cell)
    return {f"{kind}/{name}": plugin_identity(study.registry, kind, name) for kind, name in names}


def eval_plugins(study: Study) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Sampler and metric label -> {'kind/name': identity}: what each evaluation rests on (besides its cell)."""
    out = []
    for kind, tables in (("sampler", study.samplers), ("metric", study.metrics)):
        out.append({study.registry.label(kind, t): {f"{kind}/{t['name']}": plugin_identity(study.registry, kind, t["name"])}
                    for t in tables})
    out[1][halves.HALVES] = {}  # the generalisation rows rest on the sampler (and the cells) alone
    # evaluation settings that change what a metric measures are part of what it rests on (only when set,
    # so results stored with the defaults keep their identity)
    method = {k: v for k, v in study.eval.model_dump().items() if k in EVAL_METHOD and v != EVAL_DEFAULTS[k]}
    if method:
        out[1] = {m: {**ids, "eval": json.dumps(method, sort_keys=True)} for m, ids in out[1].items()}
    return out[0], out[1]


def plugin_provenance(study: Study) -> dict[str, str]:
    """'kind/name' -> identity (built-in, package==version, or file and sha256): a report says exactly what ran."""
    used: set[tuple[str, str]] = set()
    for kind in KINDS.values():
        if kind.cell:
            used |= {(kind.name, cell.config[kind.section]["name"]) for cell in study.cells}
        else:
            tables = study.sections[kind.section] if kind.many else [study.sections[kind.section]]
            used |= {(kind.name, table["name"]) for table in tables}
    return {f"{kind}/{name}": plugin_identity(study.registry, kind, name) for kind, name in sorted(used)}


def evaluated_labels(study: Study) -> dict[str, list[str]]:
    """The sampler and metric labels a study evaluates: a shared cell may hold other studies' rows too."""
    return {"samplers": [study.registry.label("sampler", s) for s in study.samplers],
            "metrics": [study.registry.label("metric", m) for m in study.metrics]}


def metric_keys(study: Study) -> dict[str, dict[str, dict[str, Any]]]:
    """Each metric's declared output keys, recorded with the run so a report needs no plugin code."""
    out = {}
    for spec in study.metrics:
        cls = study.registry.get("metric", spec["name"])
        out[study.registry.label("metric", spec)] = {k: dataclasses.asdict(v) for k, v in cls.keys.items()}
    return out
