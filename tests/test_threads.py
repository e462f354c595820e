"""The thread policy of runs that share a machine (ablate.threads): each run's share of the cores among the
live runs it counts in its pid-file registry, OpenMP's passive wait set before torch loads, and
`ablate run --threads N` reaching torch (the run's recorded hardware)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import torch

from ablate import threads
from ablate.store import Store
from studies import ORACLE, merged, run, write_study

THREADS = merged(ORACLE, {"study": {"name": "threads"}, "data": {"n_test": 200}, "eval": {"batch_size": 100},
                          "metric": [{"name": "spread", "num_samples": 100}]})

# a real neighbour: another process registered as a run of `slots` processes until its stdin closes
NEIGHBOUR = """
import sys
from pathlib import Path
from ablate.threads import registered
with registered(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None):
    print("ready", flush=True)
    sys.stdin.read()
"""


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in changes}
    return env | {k: v for k, v in changes.items() if v is not None}


def _neighbour(slots: int, directory: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", NEIGHBOUR, str(slots), *([str(directory)] if directory else [])]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_share_divides_the_cores_among_the_processes_at_least_one_each():
    assert [threads.share(2, n) for n in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert [threads.share(16, n) for n in (1, 3, 4, 5, 40)] == [16, 5, 4, 3, 1]


def test_the_registry_counts_live_runs_and_forgets_dead_ones(tmp_path):
    assert threads.live_slots(tmp_path) == 0
    with threads.registered(1, tmp_path):
        assert threads.live_slots(tmp_path) == 1
        neighbour = _neighbour(3, tmp_path)  # a pool of 3 workers in another process
        assert threads.live_slots(tmp_path) == 4
        neighbour.send_signal(signal.SIGKILL)  # no clean exit: its pid file stays behind
        neighbour.wait()
        assert (tmp_path / f"{neighbour.pid}.run").exists()
        assert threads.live_slots(tmp_path) == 1
        assert not (tmp_path / f"{neighbour.pid}.run").exists()  # a dead run's file is removed
        # a live pid whose start time differs is a reused pid, not the run that wrote the file
        (tmp_path / f"{os.getppid()}.run").write_text("5 1")
        assert threads.live_slots(tmp_path) == 1
    assert threads.live_slots(tmp_path) == 0  # the block's end unregisters


def test_an_explicit_count_wins_then_omp_num_threads_then_the_share(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threads.registered(1, tmp_path):
        neighbour = _neighbour(1, tmp_path)
        try:
            assert threads.choose(None, tmp_path) == threads.share(threads.cores(), 2)
            assert threads.choose(7, tmp_path) == 7
            monkeypatch.setenv("OMP_NUM_THREADS", "3")
            assert threads.choose(None, tmp_path) == 3
            assert threads.choose(5, tmp_path) == 5
            monkeypatch.setenv("OMP_NUM_THREADS", "nonsense")
            assert threads.choose(None, tmp_path) == threads.share(threads.cores(), 2)
        finally:
            neighbour.stdin.close()
            neighbour.wait()


def test_importing_the_cli_sets_the_passive_wait_policy_without_importing_torch():
    code = "import os, sys; import ablate.cli; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(OMP_WAIT_POLICY=None), capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    out = subprocess.run([sys.executable, "-c", code], env=_env(OMP_WAIT_POLICY="ACTIVE"), capture_output=True, text=True)
    assert out.stdout.split() == ["ACTIVE", "False"]  # the user's choice is kept


def test_torchs_openmp_sees_the_policy_when_ablate_comes_first():
    """libgomp prints its settings at load with OMP_DISPLAY_ENV=VERBOSE: passive means no spinning."""
    def spincount(code: str) -> str | None:
        err = subprocess.run([sys.executable, "-c", code], env=_env(OMP_WAIT_POLICY=None, OMP_DISPLAY_ENV="VERBOSE"),
                             capture_output=True, text=True).stderr
        return next((line.split("=")[1].strip() for line in err.splitlines() if "GOMP_SPINCOUNT" in line), None)

    default = spincount("import torch")
    if default is None:
        pytest.skip("torch's OpenMP here is not libgomp (no GOMP_SPINCOUNT to read)")
    assert default != "'0'"
    assert spincount("import ablate.cli, torch") == "'0'"


def _recorded_threads(runs: Path) -> int:
    with closing(Store(runs / "ablate.db")) as store:
        (hardware,) = store.db.execute("SELECT hardware FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(hardware)["torch_threads"]


def test_threads_flag_reaches_torch_and_the_run_record(tmp_path):
    study = write_study(tmp_path, base=THREADS)
    before = torch.get_num_threads()
    wanted = before + 2  # differs from every default here
    assert run(study, tmp_path / "runs", "--threads", str(wanted)) == 0
    assert _recorded_threads(tmp_path / "runs") == wanted
    assert torch.get_num_threads() == before  # a Python caller's own setting is restored after the run


def test_a_run_takes_its_share_alone_and_beside_another(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    study = write_study(tmp_path, base=THREADS)
    before = torch.get_num_threads()
    torch.set_num_threads(threads.cores() + 3)  # no share: a run that kept torch's setting would record this
    try:
        alone = threads.share(threads.cores(), threads.live_slots() + 1)
        assert run(study, tmp_path / "alone") == 0
        assert _recorded_threads(tmp_path / "alone") == alone
        neighbour = _neighbour(threads.cores())  # in the real registry: a run of one process per core
        try:
            assert run(study, tmp_path / "beside") == 0
        finally:
            neighbour.stdin.close()
            neighbour.wait()
        assert _recorded_threads(tmp_path / "beside") == 1
    finally:
        torch.set_num_threads(before)
