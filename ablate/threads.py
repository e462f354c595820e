"""Torch threads when runs share a machine: each `ablate run` takes its share of the cores, not all of them.

PyTorch's default is one OpenMP thread per core, and OpenMP threads wait for each other by spinning.
Two such processes on one machine spin against each other's descheduled threads: a 1,500-step cell
took 86 s beside another run against 9 s alone (docs/when-things-go-wrong.md). Two settings fix it:

- OMP_WAIT_POLICY=PASSIVE, set when `ablate` is imported unless the user set it: a waiting thread
  sleeps and gives its core away. OpenMP reads it once, when torch loads, so it must come first
  (`import ablate` before `import torch` in a script; the `ablate` command does).
- cores // slots threads per process, where slots counts the processes of the live runs of this user
  on this machine: each run registers a pid file in a per-user temp dir (a pool of N local workers is
  N slots), and a file whose process is gone is ignored and removed. A run takes its share at start
  and again before each cell, so a run that started alone gives cores back when a second one starts.
  A pid file, not a scan of /proc: a run started from Python (`ablate.run_study`, the tests) counts too.

An explicit choice wins: `ablate run --threads N`, else OMP_NUM_THREADS when set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def passive_wait() -> None:
    """Waiting OpenMP threads sleep rather than spin (unless the user chose a policy); before torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cores() -> int:
    """The cores this process may run on (its affinity mask: a cgroup or `taskset` limit counts)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share(cores: int, slots: int) -> int:
    """Threads per process when `slots` processes share `cores` cores: at least one each."""
    return max(1, cores // max(1, slots))


def registry_dir() -> Path:
    """Where live runs leave their pid files: per user, so one user's runs never shrink another's."""
    import tempfile  # here, not at the top: `ablate --help` imports this module and never needs it

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ablate-{uid}" / "runs"


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot; Linux), so a reused pid is not taken for the run."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    now = _started(pid)
    return now is None or started == "-" or now == started


def live_slots(directory: Path | None = None) -> int:
    """Processes of the live registered runs; files of runs that are gone are removed."""
    total = 0
    for path in (directory or registry_dir()).glob("*.run"):
        try:
            slots, started = path.read_text().split()
            alive = _alive(int(path.stem), started)
        except (OSError, ValueError):  # removed meanwhile, or half-written
            continue
        if alive:
            total += int(slots)
        else:
            path.unlink(missing_ok=True)
    return total


@contextmanager
def registered(slots: int, directory: Path | None = None) -> Iterator[None]:
    """This process counts as `slots` processes of a live run for the length of a block."""
    directory = directory or registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.run"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{slots} {_started(os.getpid()) or '-'}")
    tmp.replace(path)  # whole or absent: a reader never sees half a line
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _omp_num_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def choose(requested: int | None = None, directory: Path | None = None) -> int:
    """Torch threads for a process of a run: `requested` (--threads), else OMP_NUM_THREADS, else its
    share of the cores among the live runs' processes (at least this one)."""
    return requested or _omp_num_threads() or share(cores(), max(1, live_slots(directory)))


@contextmanager
def run_threads(requested: int | None, slots: int = 1) -> Iterator[Callable[[], int]]:
    """Register a run of `slots` processes and set torch's threads to its share; yields a function that
    takes the share again (before each cell). Torch's previous count is restored at the end, so a
    Python caller's own setting survives `run_study`."""
    import torch

    before = torch.get_num_threads()

    def retake() -> int:
        n = choose(requested)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        return n

    with registered(slots):
        retake()
        try:
            yield retake
        finally:
            torch.set_num_threads(before)
