"""The worker side of cells run in other processes (`local` with workers > 1, `ray`): one job is one
cell, trained and evaluated (ablate.cellrun) into a store of its own (ablate.cellstore), since the
driver alone writes runs/ablate.db. The driver side is ablate.remote.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ablate.cellrun import run_cell
from ablate.errors import StudyNote
from ablate.jobs import CellJob, Done, cell_store_path
from ablate.provenance import eval_plugins
from ablate.store import Store
from ablate.study import load_study
from ablate.threads import choose

_STUDIES: dict[tuple, Any] = {}  # a warm worker process reuses the study and the datasets it loaded
DATASETS: dict[str, Any] = {}


def run_job(job: CellJob) -> Done:
    """Worker side: run one cell into its own store; returns the cell's summary line."""
    torch.set_num_threads(choose(job.threads))  # per job: other runs may have started or ended meanwhile
    if Path(job.cwd).is_dir():
        os.chdir(job.cwd)
    spec = (job.study_path, job.profile, job.overrides, job.extra_plugins)
    if spec not in _STUDIES:
        with warnings.catch_warnings():  # the driver has shown the study's notes once
            warnings.simplefilter("ignore", StudyNote)
            _STUDIES[spec] = load_study(job.study_path, job.profile, list(job.overrides), list(job.extra_plugins))
    study = _STUDIES[spec]
    cell = next((c for c in study.cells if c.key == job.key), None)
    if cell is None:
        raise RuntimeError(f"cell {job.key} is not in this worker's copy of {job.study_path}: "
                           "the study file or its plugins differ between the driver and this machine")
    store = Store(cell_store_path(job.runs_dir, job.key))
    try:
        store.set_identities(*eval_plugins(study))
        line = run_cell(study, cell, store, Path(job.runs_dir), DATASETS, False, job.prefix)
    finally:
        store.close()
    return Done(job, line)
