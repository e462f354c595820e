"""Faults a long study meets, each survived: changed plugin code, a kill inside a store write, a
damaged checkpoint, a NaN loss, two runs on one runs dir, an unwritable runs dir and a full disk.

The runs that fail are real subprocesses (`python -m ablate.cli run ...`); faults inside SQLite
come from tests/data/faults/sitecustomize.py, put on the subprocess's PYTHONPATH. The reruns and the
uninterrupted references run in this process (one thread, so bitwise comparable).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_pipeline import Killed

import ablate
from ablate.interfaces import KINDS
from ablate.study import load_study
from studies import (
    DATA,
    assert_no_duplicates,
    counts,
    gmm,
    losses,
    metric_values,
    name_of,
    plugin,
    query,
    run,
    run_process,
    write_study,
)


def ablate_run(study: Path, runs: Path, *flags: str, fault: str = "", file_size: int | None = None,
               wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """`ablate run` in a fresh process (studies.run_process). fault: $ABLATE_FAULT for
    tests/data/faults/sitecustomize.py; file_size: RLIMIT_FSIZE in bytes (the kernel then fails every write
    past it, like a full disk)."""
    env = {"PYTHONPATH": os.pathsep.join([str(DATA / "faults"), os.environ.get("PYTHONPATH", "")]),
           "ABLATE_FAULT": fault} if fault else {}

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return run_process(study, runs, *flags, env=env, wait=wait, **({"preexec_fn": limit} if file_size else {}))


def one_line_error(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """Exit 2 and one clean `error:` line on stderr, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- provenance: results of changed plugin code are never reused silently ---------------------------

SAMPLER_FILE = plugin('''
from ablate import Sampler

SCALE = {scale}


class Shrunk(Sampler):
    """x0_hat(x_T) in one evaluation, times SCALE: editing SCALE changes the samples."""

    name = "shrunk"

    def sample(self, denoiser, diffusion, x, t_start, generator):
        import torch

        t = torch.full((x.shape[0],), t_start, dtype=torch.long, device=x.device)
        return SCALE * denoiser(x, t).x0

    def nfe(self, diffusion, t_start):
        return 1
''', ablate_samplers=["Shrunk"])

def test_an_edited_sampler_file_stops_the_rerun_until_recompute_stale(tmp_path):
    plugin = tmp_path / "shrunk.py"
    plugin.write_text(SAMPLER_FILE.format(scale=1.0))
    study = write_study(tmp_path, base=gmm("provenance", 100, samples=200), plugins=[str(plugin)],
                        sampler=[{"name": "ancestral"}, {"name": "shrunk"}])
    runs = tmp_path / "runs"
    assert run(study, runs) == 0
    (key,) = [k for (k,) in query(runs, "SELECT key FROM cells")]
    first = {(name_of(s), k): v for _, s, _, k, v, *_ in metric_values(runs)}
    recorded = json.loads(query(runs, "SELECT plugins FROM evals WHERE sampler='shrunk' AND metric LIKE 'gmm_fit%'")[0][0])
    assert recorded == {"sampler/shrunk": f"{plugin} sha256:{sha256(plugin)}", "metric/gmm_fit": recorded["metric/gmm_fit"]}
    assert recorded["metric/gmm_fit"] == f"built-in (ablate {ablate.__version__})"
    cell_plugins = json.loads(query(runs, "SELECT plugins FROM cells")[0][0])
    (cell,) = load_study(study).cells
    assert set(cell_plugins) == {f"{k.name}/{cell.config[k.section]['name']}" for k in KINDS.values() if k.cell}
    assert {"model/mlp", "target/epsilon"} <= set(cell_plugins)
    before = (counts(runs), metric_values(runs), query(runs, "SELECT * FROM evals ORDER BY 1, 2, 3"))

    plugin.write_text(SAMPLER_FILE.format(scale=0.5))
    stopped = ablate_run(study, runs)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "--recompute-stale" in stopped.stderr
    assert f"evaluation shrunk x gmm_fit(num_samples=200) of default seed 0 ({key})" in stopped.stderr
    assert f"sampler/shrunk was {plugin} sha256:" in stopped.stderr
    assert "ancestral" not in stopped.stderr and "cell " not in stopped.stderr  # only what changed is listed
    assert (counts(runs), metric_values(runs), query(runs, "SELECT * FROM evals ORDER BY 1, 2, 3")) == before
    assert query(runs, "SELECT COUNT(*) FROM runs") == [(1,)]  # the stopped run recorded nothing

    redone = ablate_run(study, runs, "--recompute-stale")
    assert redone.returncode == 0, redone.stderr
    assert "recomputing evaluation shrunk x gmm_fit" in redone.stdout
    after = {(name_of(s), k): v for _, s, _, k, v, *_ in metric_values(runs)}
    assert {k: v for k, v in after.items() if k[0] != "shrunk"} == {k: v for k, v in first.items() if k[0] != "shrunk"}
    assert after[("shrunk", "std_ratio")] == pytest.approx(0.5 * first[("shrunk", "std_ratio")], rel=1e-5)
    # kept: the training (no new losses) and the unchanged evaluations (same finish times)
    assert query(runs, "SELECT * FROM evals WHERE sampler != 'shrunk' ORDER BY 1, 2, 3") == \
        [row for row in before[2] if row[1] != "shrunk"]
    assert query(runs, "SELECT plugins FROM evals WHERE sampler='shrunk'") == \
        [(json.dumps({**recorded, "sampler/shrunk": f"{plugin} sha256:{sha256(plugin)}"}, sort_keys=True),)]
    assert_no_duplicates(runs)
    # the report's source: the run records every plugin it rests on, with its identity
    provenance = json.loads(query(runs, "SELECT plugins FROM runs ORDER BY id DESC LIMIT 1")[0][0])
    assert provenance["sampler/shrunk"] == f"{plugin} sha256:{sha256(plugin)}"
    assert set(provenance) == {*cell_plugins, "sampler/ancestral", "sampler/shrunk", "metric/gmm_fit",
                               "metric/x0_error_by_t", "executor/local"}


WEIGHTING_FILE = plugin('''
from ablate import Weighting


class Flat(Weighting):
    """w(t) = {w}"""

    name = "flat"

    def weights(self, diffusion, target, t):
        return diffusion.betas.new_full(t.shape, 1.0).to(t.device)
''', ablate_weightings=["Flat"])


def test_an_edited_training_plugin_makes_the_cell_stale_and_recompute_trains_it_again(tmp_path, capsys):
    plugin = tmp_path / "flat.py"
    plugin.write_text(WEIGHTING_FILE.format(w="one"))
    study = write_study(tmp_path, base=gmm("stale_cell", 60, checkpoint_every=30, samples=100), plugins=[str(plugin)],
                        weighting={"name": "flat"})
    runs = tmp_path / "runs"
    assert run(study, runs) == 0
    (key,) = [k for (k,) in query(runs, "SELECT key FROM cells")]
    ckpt = runs / key / "checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    rows = counts(runs)
    capsys.readouterr()

    plugin.write_text(WEIGHTING_FILE.format(w="one, edited"))  # a new hash (this process keeps the old module)
    assert run(study, runs) == 2
    err = capsys.readouterr().err
    assert f"cell default seed 0 ({key}): weighting/flat was {plugin} sha256:" in err and "--recompute-stale" in err
    assert ckpt.stat().st_mtime_ns == mtime and counts(runs) == rows

    assert run(study, runs, "--recompute-stale") == 0
    assert ckpt.stat().st_mtime_ns != mtime  # trained again from step 0
    assert counts(runs) == rows and query(runs, "SELECT status, step FROM cells") == [("done", 60)]
    assert json.loads(query(runs, "SELECT plugins FROM cells")[0][0])["weighting/flat"] == f"{plugin} sha256:{sha256(plugin)}"
    assert_no_duplicates(runs)
    assert run(study, runs) == 0  # now current: nothing stale
    assert "already done" in capsys.readouterr().out


def test_bookkeeping_settings_reuse_the_cell(tmp_path):
    """checkpoint_every and log_every cannot change the model: changing them trains nothing again."""
    study = write_study(tmp_path, base=gmm("bookkeeping", 60, checkpoint_every=30, samples=100))
    keys = {c.key for c in load_study(study).cells}
    assert keys == {c.key for c in load_study(study, overrides=["train.checkpoint_every=7", "train.log_every=3"]).cells}
    assert keys.isdisjoint({c.key for c in load_study(study, overrides=["train.steps=61"]).cells})
    runs = tmp_path / "runs"
    ablate.run_study(study, runs_dir=runs, progress=False)
    before = (counts(runs), query(runs, "SELECT key, train_seconds, step FROM cells"), metric_values(runs))
    ablate.run_study(study, runs_dir=runs, progress=False, overrides=["train.checkpoint_every=7", "train.log_every=3"])
    assert (counts(runs), query(runs, "SELECT key, train_seconds, step FROM cells"), metric_values(runs)) == before


# --- a kill inside a store write: the transaction is all or nothing -------------------------------------

@pytest.mark.parametrize("table", ["losses", "metrics"])
def test_sigkill_inside_a_store_write_leaves_no_half_written_rows(tmp_path, table):
    study = write_study(tmp_path, base=gmm("store_kill", 200, checkpoint_every=50, samples=200))
    runs = tmp_path / "runs"
    killed = ablate_run(study, runs, fault=f"kill:{table}:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if table == "losses":  # the second checkpoint's losses were written, then the kill came before the commit
        assert [s for _, s, _ in losses(runs)] == list(range(10, 51, 10))
        assert query(runs, "SELECT status, step FROM cells") == [("pending", 50)]
    else:  # the first evaluation committed; the second's rows were written, never committed
        assert query(runs, "SELECT status FROM cells") == [("trained",)]
        assert query(runs, "SELECT COUNT(*) FROM evals") == [(1,)]
    assert query(runs, "SELECT COUNT(*) FROM metrics m WHERE NOT EXISTS (SELECT 1 FROM evals e WHERE e.cell = m.cell "
                       "AND e.sampler = m.sampler AND e.metric = m.metric AND e.step = m.step AND e.weights = m.weights)") == [(0,)]
    ablate.run_study(study, runs_dir=runs, progress=False)
    clean = tmp_path / "clean"
    ablate.run_study(study, runs_dir=clean, progress=False)
    assert losses(runs) == losses(clean)
    assert metric_values(runs) == metric_values(clean)
    assert_no_duplicates(runs)


# --- a damaged checkpoint: detected, set aside, the cell trains again -----------------------------------

class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not only tensors"])
def test_a_damaged_checkpoint_is_detected_and_the_cell_trains_again(tmp_path, monkeypatch, damage):
    import ablate.train

    study = write_study(tmp_path, base=gmm("damaged", 200, checkpoint_every=100, samples=100))
    runs = tmp_path / "runs"
    original = ablate.train.save_atomic

    def dying(obj: dict, path: Path) -> None:  # a kill right after the first checkpoint: step 100 on disk
        if obj["step"] == 200:
            raise Killed
        original(obj, path)

    with monkeypatch.context() as patch:
        patch.setattr(ablate.train, "save_atomic", dying)
        with pytest.raises(Killed):
            ablate.run_study(study, runs_dir=runs, progress=False)
    (ckpt,) = runs.glob("*/checkpoint.pt")
    marker = tmp_path / "code-ran"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    else:  # a pickle that would run code when loaded without weights_only
        torch.save({"step": 100, "model": Evil(marker)}, ckpt)

    with pytest.warns(UserWarning, match=r"checkpoint .*checkpoint\.pt is unreadable .*training this cell again from scratch"):
        ablate.run_study(study, runs_dir=runs, progress=False)
    assert not marker.exists()
    assert (ckpt.parent / "checkpoint.pt.corrupt").exists()
    clean = tmp_path / "clean"
    ablate.run_study(study, runs_dir=clean, progress=False)
    assert losses(runs) == losses(clean) and metric_values(runs) == metric_values(clean)
    assert query(runs, "SELECT status, step FROM cells") == [("done", 200)]
    assert_no_duplicates(runs)


# --- NaN loss, two runs at once ------------------------------------------------------------------------

def test_a_nan_loss_fails_its_cell_with_the_reason_and_the_others_finish(tmp_path):
    study = write_study(tmp_path, base=gmm("nan", 50, samples=100), plugins=[str(DATA / "nan_weighting.py")],
                        grid={"weighting": [{"name": "simple"}, {"name": "nan_weights"}]})
    runs = tmp_path / "runs"
    proc = ablate_run(study, runs)
    assert proc.returncode == 0, proc.stderr
    assert "FAILED nan_weights seed 0: loss became nan at step 10" in proc.stdout
    assert sorted(query(runs, "SELECT rc.arm, c.status, c.reason FROM cells c JOIN run_cells rc ON rc.cell = c.key")) == [
        ("nan_weights", "failed", "loss became nan at step 10"), ("simple", "done", None)]
    arms = dict(query(runs, "SELECT rc.arm, COUNT(*) FROM metrics m JOIN run_cells rc ON rc.cell = m.cell GROUP BY 1"))
    assert set(arms) == {"simple"} and arms["simple"] >= 9  # at least gmm_fit's 6 keys and x0_error_by_t's 4
    again = ablate_run(study, runs)
    assert "failed earlier (loss became nan at step 10); not retried" in again.stdout


def test_a_second_run_on_one_runs_dir_fails_clearly(tmp_path, capsys):
    study = write_study(tmp_path, base=gmm("busy", 100_000, checkpoint_every=100_000))
    runs = tmp_path / "runs"
    first = ablate_run(study, runs, wait=False)
    try:
        deadline = time.monotonic() + 120
        while first.poll() is None and time.monotonic() < deadline and not (runs / "ablate.db").exists():
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        assert run(study, runs) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: another `ablate run` is using") and len(err.splitlines()) == 1
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.communicate()


# --- an unwritable runs dir and a full disk: one line, exit 2, nothing stored lost --------------------

def test_a_runs_dir_that_is_a_file_is_one_clear_error(tmp_path):
    study = write_study(tmp_path, base=gmm("file_runs", 10))
    (tmp_path / "runs").write_text("not a directory")
    one_line_error(ablate_run(study, tmp_path / "runs"), "is a file, not a directory")
    assert (tmp_path / "runs").read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (see the runs-dir-is-a-file test)")
def test_an_unwritable_runs_dir_is_one_clear_error_and_keeps_the_store(tmp_path):
    study = write_study(tmp_path, base=gmm("readonly", 30, samples=100))
    runs = tmp_path / "runs"
    ablate.run_study(study, runs_dir=runs, progress=False)
    before = (counts(runs), metric_values(runs))
    paths = [runs, *runs.iterdir()]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        one_line_error(ablate_run(study, runs, "--set", "train.steps=40"), "cannot write")
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert (counts(runs), metric_values(runs)) == before


@pytest.mark.parametrize("fault", ["store full", "checkpoint too large"])
def test_a_full_disk_is_one_clear_error_and_the_rerun_finishes(tmp_path, fault):
    """SQLite's ENOSPC ('database or disk is full') on the second metric write, or the kernel failing
    a checkpoint write (RLIMIT_FSIZE, with a model whose checkpoint is larger than the limit)."""
    hidden = 256 if fault == "checkpoint too large" else 32
    study = write_study(tmp_path, base=gmm("full", 100, hidden=hidden, checkpoint_every=50, samples=200))
    runs = tmp_path / "runs"
    if fault == "store full":
        proc = ablate_run(study, runs, fault="full:metrics:2")
        one_line_error(proc, "cannot write the results store", "database or disk is full", "rerun the same command")
        assert query(runs, "SELECT COUNT(*) FROM evals") == [(1,)]  # the first evaluation stays stored
    else:
        proc = ablate_run(study, runs, file_size=1_000_000)
        one_line_error(proc, "cannot write a checkpoint", "rerun the same command")
        assert [s for _, s, _ in losses(runs)] == list(range(10, 51, 10))  # stored before the checkpoint
        assert not list(runs.glob("*/checkpoint.pt"))
    ablate.run_study(study, runs_dir=runs, progress=False)
    clean = tmp_path / "clean"
    ablate.run_study(study, runs_dir=clean, progress=False)
    assert losses(runs) == losses(clean) and metric_values(runs) == metric_values(clean)
    assert_no_duplicates(runs)
