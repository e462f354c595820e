"""Executors: how independent cells are run.

`local` runs them one after another in this process, or with `workers = N` in N processes of this
machine; `ray` runs each cell as a Ray task on a local Ray or a cluster (RAY_ADDRESS). With more than
one process the driver alone writes the results store (ablate.remote, ablate.worker): a worker returns its cell and
the driver merges it; a task that dies or raises is retried `max_retries` times, then the cell is
recorded as failed with the reason.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import secrets
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ablate import AblateError, Executor, hookimpl
from ablate.jobs import CellJob, Done, Failed


class Local(Executor):
    """One cell after another in this process (the default), or `workers` processes of this machine."""

    name = "local"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        workers: int = Field(1, ge=1, description="processes running cells at once; 1 runs them in this process. "
                             "Each gets cores // (workers of every live run) torch threads")
        max_retries: int = Field(2, ge=0, description="times a cell whose worker process died or raised is run "
                                 "again before it is recorded as failed (workers > 1)")

    @property
    def remote(self) -> bool:
        """Cells go to other processes: `map` gets ablate.worker.run_job and CellJobs (ablate.jobs)."""
        return self.params.workers > 1

    @property
    def processes(self) -> int:
        """Processes of this machine running cells: the thread policy (ablate.threads) counts each."""
        return self.params.workers

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if not self.remote:
            for item in items:
                yield fn(item)
            return
        yield from self._processes(fn, list(items))

    def _processes(self, fn: Callable[[CellJob], Done], jobs: list[CellJob]) -> Iterator[Done | Failed]:
        """One single-process pool per worker: a process that dies breaks only its own pool, so the
        cell it ran is known (a shared pool fails every cell in flight) and gets the retry."""
        context = multiprocessing.get_context("spawn")  # no forked CUDA or thread-pool state

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(1, mp_context=context)

        pools = [new_pool() for _ in range(min(self.params.workers, len(jobs)))]
        pending, tries = deque(jobs), Counter[str]()
        running: dict[Future, tuple[int, CellJob]] = {}
        try:
            while pending or running:
                busy = {slot for slot, _ in running.values()}
                for slot in range(len(pools)):
                    if pending and slot not in busy:
                        job = pending.popleft()
                        running[pools[slot].submit(fn, job)] = (slot, job)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    slot, job = running.pop(future)
                    try:
                        outcome: Done | Failed = future.result()
                    except BrokenProcessPool:
                        pools[slot].shutdown(wait=False)
                        pools[slot] = new_pool()
                        outcome = Failed(job, "its worker process died")
                    except Exception as exc:  # the cell's own error: retried like a lost worker
                        outcome = Failed(job, f"{type(exc).__name__}: {exc}")
                    if isinstance(outcome, Failed):
                        tries[job.key] += 1
                        if tries[job.key] <= self.params.max_retries:
                            pending.appendleft(job)
                            continue
                        outcome = Failed(job, f"{outcome.reason} (tried {tries[job.key]} times)")
                    yield outcome
        finally:
            for pool in pools:
                pool.shutdown(wait=False, cancel_futures=True)


class Ray(Executor):
    """Each cell, with its evaluations, is a Ray task (needs `pip install 'ablate[ray]'`).

    Connects to the cluster at $RAY_ADDRESS, or starts a local Ray sized to this machine. Runs
    directories and the study's files must be at the same paths on every node (a shared filesystem):
    checked on every node before any cell starts."""

    name = "ray"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cpus_per_cell: float = Field(1.0, gt=0, description="CPUs a cell's task requests (its torch threads: "
                                     "this rounded down, at least 1)")
        gpus_per_cell: float = Field(0.0, ge=0, description="GPUs a cell's task requests; a fraction packs "
                                     "cells on one GPU (0.25: four at a time)")
        max_retries: int = Field(2, ge=0, description="times a task that died or raised is run again before "
                                 "its cell is recorded as failed")

    remote = True

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        if importlib.util.find_spec("ray") is None:
            raise AblateError("executor 'ray' needs Ray, which is not installed: pip install 'ablate[ray]'",
                              key="executor.name")

    @property
    def threads(self) -> int:
        return max(1, int(self.params.cpus_per_cell))

    def map(self, fn: Callable[[CellJob], Done], items: Iterable[CellJob]) -> Iterator[Done | Failed]:
        import ray

        jobs = list(items)
        if not jobs:
            return
        started = not ray.is_initialized()
        if started:
            try:  # RAY_ADDRESS, when set, is read by ray.init itself
                ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False,
                         runtime_env=_runtime_env())
            except ConnectionError as exc:
                raise AblateError(f"cannot connect to the Ray cluster at RAY_ADDRESS="
                                  f"{os.environ.get('RAY_ADDRESS')!r}: {exc}") from None
        try:
            self._check_resources(ray)
            _check_shared(ray, Path(jobs[0].runs_dir), jobs[0].study_path)
            task = ray.remote(fn).options(num_cpus=self.params.cpus_per_cell, num_gpus=self.params.gpus_per_cell,
                                          max_retries=self.params.max_retries, retry_exceptions=True)
            refs = {task.remote(job): job for job in jobs}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(ready[0])
                try:
                    yield ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    yield Failed(job, f"{_reason(exc)} (tried {self.params.max_retries + 1} times)")
        finally:
            if started:
                ray.shutdown()

    def _check_resources(self, ray: Any) -> None:
        """A request no node can meet would wait forever: say so instead."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for key, resource in (("gpus_per_cell", "GPU"), ("cpus_per_cell", "CPU")):
            want = getattr(self.params, key)
            most = max((n.get(resource, 0.0) for n in nodes), default=0.0)
            if want > most:
                raise AblateError(f"{want:g} {resource}s per cell, but no node of the Ray cluster has more than "
                                  f"{most:g}", key=f"executor.{key}")


def _runtime_env() -> dict[str, Any]:
    """ablate's environment variables (e.g. ABLATE_LOAD_PLUGINS) reach the workers of a cluster too."""
    env = {k: v for k, v in os.environ.items() if k.startswith("ABLATE_")}
    return {"env_vars": env} if env else {}


def _reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _read_marker(marker: str, token: str, study_path: str) -> tuple[str, str | None]:
    """Runs on a node: (its host name, what it cannot see of the driver's files, or None)."""
    host = socket.gethostname()
    try:
        if Path(marker).read_text() != token:
            return host, f"{marker} has other content: another machine's directory at the same path"
    except OSError as exc:
        return host, f"cannot read {marker}: {exc.strerror}"
    if not Path(study_path).is_file():
        return host, f"cannot read the study file {study_path}"
    return host, None


def _check_shared(ray: Any, runs_dir: Path, study_path: str) -> None:
    """Every node must see the driver's runs dir and study file at the same path: a marker file the
    driver writes is read back on each node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    runs_dir = runs_dir.resolve()
    marker, token = runs_dir / f".shared-check-{secrets.token_hex(4)}", secrets.token_hex(16)
    marker.write_text(token)
    try:
        check = ray.remote(_read_marker)
        refs = [check.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker), token, study_path) for n in ray.nodes() if n.get("Alive")]
        problems = [f"{host}: {problem}" for host, problem in ray.get(refs) if problem]
    finally:
        marker.unlink(missing_ok=True)
    if problems:
        raise AblateError("the runs dir and the study must be on a filesystem every Ray node shares, at the same "
                          "path (see docs/running-on-a-cluster.md):\n  " + "\n  ".join(problems), key="--runs-dir")


@hookimpl
def ablate_executors() -> list[type]:
    return [Local, Ray]
