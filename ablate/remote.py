"""The driver side of cells run in other processes (`local` with workers > 1, `ray`): the driver alone
writes runs/ablate.db. It skips finished cells, seeds each remaining cell's own store
(ablate.cellstore), hands the jobs to the executor with the worker's entry point (ablate.worker.run_job)
and merges each result as it comes back. A task that still fails after the executor's retries is
recorded as a failed cell with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablate.cellrun import all_evaluated
from ablate.cellstore import merge_cell_store, seed_cell_store
from ablate.jobs import CellJob, Failed, RemoteMap, cell_store_path
from ablate.store import Store
from ablate.worker import DATASETS, run_job


def run_remote(executor_map: RemoteMap, study: Any, store: Store, runs_dir: Path, jobs_from: dict[str, Any],
               threads: int | None = None, settled: list[str] | None = None) -> Iterator[str]:
    """Driver side: skip finished cells, seed each cell's store, hand the rest to the executor and merge
    each result as it comes back; yields one summary line per cell.

    jobs_from: study_path, profile, overrides and extra_plugins of this run (what workers reload).
    settled: each cell's key is appended to it just before its line is yielded (its rows are in the store)."""
    settled = [] if settled is None else settled

    total, jobs = len(study.cells), []
    for i, cell in enumerate(study.cells, 1):
        name = f"[{i}/{total}] {cell.arm} seed {cell.seed} ({cell.key})"
        path = cell_store_path(runs_dir, cell.key)
        if path.exists():  # left by a killed driver: keep what its worker finished
            merge_cell_store(store, path, cell.key, current_only=True)
        state = store.cell(cell.key) or {}
        if state.get("status") == "failed":
            settled.append(cell.key)
            yield f"{name}: failed earlier ({state.get('reason')}); not retried"
            continue
        if state.get("status") == "done" and all_evaluated(study, cell, store, runs_dir, DATASETS):
            settled.append(cell.key)
            yield f"{name}: already done"
            continue
        seed_cell_store(store, path, cell.key)
        jobs.append(CellJob(runs_dir=str(runs_dir.resolve()), key=cell.key, prefix=f"[{i}/{total}]", name=name,
                            cwd=os.getcwd(), threads=threads, **jobs_from))
    for outcome in executor_map(run_job, jobs):
        job = outcome.job
        path = cell_store_path(runs_dir, job.key)
        if path.exists():  # a failed cell keeps the losses and results it stored before failing
            merge_cell_store(store, path, job.key)
        settled.append(job.key)
        if isinstance(outcome, Failed):
            store.update_cell(job.key, status="failed", reason=outcome.reason)
            yield f"{job.name}: FAILED ({outcome.reason})"
        else:
            yield outcome.line
