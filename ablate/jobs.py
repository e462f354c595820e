"""What the driver and a worker exchange when cells run in other processes (`local` with workers > 1,
`ray`): the job, and what comes back. Plain picklable dataclasses, so executors can import them
without the training code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CELL_STORE = "cell.db"  # a worker's own store of its cell, in the cell's run dir


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell, picklable: it reloads the study from its file."""

    study_path: str
    profile: str | None
    overrides: tuple[str, ...]
    extra_plugins: tuple[str, ...]
    runs_dir: str
    key: str
    prefix: str  # "[i/n]"
    name: str  # "[i/n] arm seed s (key)"
    cwd: str  # the driver's working directory: relative paths in the study mean the same in the worker
    threads: int | None = None  # torch threads in the worker (None: its share of the cores, ablate.threads)


@dataclass(frozen=True)
class Done:
    """What a worker returns: the job and the cell's summary line."""

    job: CellJob
    line: str


@dataclass(frozen=True)
class Failed:
    """What a remote executor yields for a job that failed on every try."""

    job: CellJob
    reason: str


RemoteMap = Callable[[Callable[[CellJob], Done], Iterable[CellJob]], Iterator["Done | Failed"]]


def cell_store_path(runs_dir: str | Path, key: str) -> Path:
    return Path(runs_dir) / key / CELL_STORE
