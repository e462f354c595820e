"""The pipeline end to end on tiny studies (seconds on a CPU): results, rerun, resume after
SIGKILL (in training and in evaluation) and determinism.

Every study here is written into a temporary folder; the local plugins the tests need live in
tests/data/. Killed runs are real subprocesses (`python -m ablate.cli run ...`) killed with
SIGKILL, so nothing gets a chance to clean up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import ablate
from ablate.store import REAL_DATA, REFERENCE_ROWS
from ablate.study import load_study
from studies import (
    DATA,
    GMM_KEYS,
    X0_KEYS,
    assert_no_duplicates,
    counts,
    execute,
    gmm,
    losses,
    metric_values,
    name_of,
    query,
    run,
    run_process,
    write_study,
)

REAL = REAL_DATA  # the real-data floor: real images scored like samples


def cli_process(study: Path, runs: Path, log: Path) -> subprocess.Popen:
    """`python -m ablate.cli run STUDY --runs-dir RUNS` in a fresh process writing to `log`."""
    with open(log, "w") as out:
        return run_process(study, runs, wait=False, stdout=out, stderr=subprocess.STDOUT)


# --- a gmm2d + mlp study: 2 cells (targets) x 2 samplers x 3 metrics -------------------------------

GRID = {"grid": {"target": [{"name": "epsilon"}, {"name": "x0"}]},
        "sampler": [{"name": "ancestral"}, {"name": "one_step", "jump_at": 99}],
        "metric": [{"name": "fid", "features": "raw", "num_samples": 500}, *gmm()["metric"]]}


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    """The gmm study run once through the Python API (shared by the tests that only read it)."""
    root = tmp_path_factory.mktemp("gmm")
    study = write_study(root, base=gmm(), **GRID)
    frame = ablate.run_study(study, runs_dir=root / "runs", progress=False)
    return study, root / "runs", frame


def test_gmm_study_end_to_end(gmm_run):
    study, runs, frame = gmm_run
    assert isinstance(frame, pd.DataFrame)
    # one row per cell x sampler x metric key; x0_error_by_t needs no sampler ("-")
    got = sorted(zip(frame.arm, frame.sampler.map(name_of), frame.metric.map(name_of), frame.key, strict=True))
    want = sorted(
        [(arm, s, "gmm_fit", k) for arm in ("epsilon", "x0") for s in ("ancestral", "one_step", REAL) for k in GMM_KEYS]
        + [(arm, s, "fid", "fid") for arm in ("epsilon", "x0") for s in ("ancestral", "one_step", REAL)]
        + [(arm, "-", "x0_error_by_t", k) for arm in ("epsilon", "x0") for k in X0_KEYS]
    )
    assert got == want
    assert set(frame.study) == {"tiny_gmm"} and set(frame.seed) == {0}
    assert frame.cell.nunique() == 2
    # NFE is measured: T for ancestral, 1 for the jump from pure noise, none for the diagnostic
    nfe = frame.groupby(frame.sampler.map(name_of)).nfe.agg(["min", "max"])
    assert nfe.loc["ancestral"].tolist() == [100, 100] and nfe.loc["one_step"].tolist() == [1, 1]
    assert frame[frame.sampler == "-"].nfe.isna().all()
    # every row records its sample count; the floor scores one half of the 500 held-out points against the other
    sampled = frame[frame.sampler != REAL]
    assert set(sampled[sampled.metric.str.startswith("gmm_fit")].num_samples) == {500}
    assert set(frame[frame.metric.str.startswith("x0_error_by_t")].num_samples) == {200}
    assert set(sampled[sampled.metric.str.startswith("fid")].num_samples) == {500}
    assert set(frame[frame.sampler == REAL].num_samples) == {250}
    fid = frame[frame.key == "fid"].value
    assert (fid >= 0).all() and fid.map(float).notna().all()
    # even 200 steps learn the ring well enough for the full ancestral chain to find most modes
    covered = frame[(frame.key == "modes_covered") & (frame.sampler == "ancestral")].value
    assert (covered >= 0.5).all()

    # the store: every cell done with its loss curve, and its run directory
    cells = query(runs, "SELECT key, status, step, num_params FROM cells")
    assert {(status, step) for _, status, step, _ in cells} == {("done", 200)}
    for key, *_ in cells:
        assert [s for (s,) in query(runs, "SELECT step FROM losses WHERE cell=? ORDER BY step", (key,))] == list(range(10, 201, 10))
        assert {p.name for p in (runs / key).iterdir()} >= {"config.json", "checkpoint.pt"}
        assert len(list((runs / key).glob("samples-*.pt"))) == 2  # one sample grid per sampler
    assert query(runs, "SELECT COUNT(*) FROM runs WHERE finished IS NOT NULL") == [(1,)]
    assert_no_duplicates(runs)


def test_cli_run_gives_identical_results(gmm_run, tmp_path, capsys):
    """Same config and seed, another runs dir, through the CLI: bitwise the same losses and metrics."""
    study, runs, _ = gmm_run
    other = tmp_path / "runs"
    assert run(study, other) == 0
    out = capsys.readouterr().out
    assert "study tiny_gmm: 2 cells x 2 samplers x 3 metrics" in out and "done in" in out
    assert losses(other) == losses(runs)
    assert len(losses(runs)) == 2 * 20
    assert metric_values(other) == metric_values(runs)
    for key in {k for k, *_ in losses(runs)}:
        a = torch.load(runs / key / "checkpoint.pt", weights_only=True)
        b = torch.load(other / key / "checkpoint.pt", weights_only=True)
        for part in ("model", "ema"):
            assert all(torch.equal(a[part][n], b[part][n]) for n in a[part])


def test_rerun_adds_nothing_and_retrains_nothing(gmm_run):
    study, runs, frame = gmm_run
    before = counts(runs)
    train_seconds = query(runs, "SELECT key, train_seconds, step FROM cells ORDER BY key")
    evals = query(runs, "SELECT cell, sampler, metric, finished FROM evals ORDER BY 1, 2, 3")
    checkpoints = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")}

    again = ablate.run_study(study, runs_dir=runs, progress=False)

    assert counts(runs) == before
    assert query(runs, "SELECT key, train_seconds, step FROM cells ORDER BY key") == train_seconds
    assert query(runs, "SELECT cell, sampler, metric, finished FROM evals ORDER BY 1, 2, 3") == evals
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")} == checkpoints
    cols = ["arm", "seed", "cell", "sampler", "metric", "key", "value", "num_samples", "nfe"]
    pd.testing.assert_frame_equal(again[cols], frame[cols])
    # both runs are recorded, each finished
    assert query(runs, "SELECT COUNT(*), COUNT(finished) FROM runs") == [(2, 2)]


# --- digits + a tiny UNet, FID on the features of a cached classifier ---------------------------

DIGITS = {"study": {"name": "tiny_digits"}, "data": {"name": "digits"},
          "model": {"name": "unet", "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0},
          "schedule": {"T": 20, "beta_end": 0.015},  # x 1000/T = 0.3
          "train": {"steps": 20, "batch_size": 32, "lr": 1e-3, "warmup": 5, "checkpoint_every": 10, "log_every": 5},
          "eval": {"batch_size": 100, "grid_samples": 8},
          "metric": [{"name": "fid", "features": "classifier", "num_samples": n} for n in (100, 50)]}


def test_digits_unet_end_to_end(tmp_path, monkeypatch):
    import ablate_plugins.features as features

    runs = tmp_path / "runs"
    cached_before_call = []
    original = features.trained_classifier

    def spy(data, cache_dir, *args, **kwargs):
        cached_before_call.append(bool(list(Path(cache_dir).glob("classifier-*.pt"))))
        return original(data, cache_dir, *args, **kwargs)

    monkeypatch.setattr(features, "trained_classifier", spy)
    frame = ablate.run_study(write_study(tmp_path, "digits.toml", **DIGITS), runs_dir=runs, progress=False)

    # each FID for the samples, for held-out images (the floor) and for every rung of the calibration ladder
    assert sorted(zip(frame.sampler, frame.metric, frame.key, strict=True)) == sorted(
        (s, f"fid(num_samples={n})", k) for s in ("ancestral", *REFERENCE_ROWS) for n in (50, 100)
        for k in ("classifier_test_acc", "fid"))
    assert dict(zip(frame.sampler, frame.nfe, strict=True)) == {"ancestral": 20, **dict.fromkeys(REFERENCE_ROWS, 0)}
    acc = frame[frame.key == "classifier_test_acc"].value
    assert (acc > 0.8).all() and acc.nunique() == 1
    assert (frame[frame.key == "fid"].value >= 0).all()
    # real digits score far better than 20 steps of training
    fids = frame[frame.key == "fid"].groupby("sampler").value.max()
    assert fids[REAL_DATA] < fids["ancestral"]
    # trained once (by the first FID), then read from runs/cache by the others
    assert cached_before_call == [False] + [True] * (2 * (1 + len(REFERENCE_ROWS)) - 1)
    assert len(list((runs / "cache").glob("classifier-digits-*.pt"))) == 1
    (key,) = set(frame.cell)
    assert query(runs, "SELECT status, step, num_params > 0 FROM cells") == [("done", 20, 1)]
    assert [s for (s,) in query(runs, "SELECT step FROM losses ORDER BY step")] == [5, 10, 15, 20]
    grid = torch.load(next((runs / key).glob("samples-*.pt")), weights_only=True)
    assert grid.shape == (8, 1, 8, 8)


# --- SIGKILL in training: resume from the checkpoint, exactly ---------------------------------------

def test_resume_after_sigkill_in_training(tmp_path):
    steps = 1000
    study = write_study(tmp_path, base=gmm("resume", steps, hidden=64, checkpoint_every=100, samples=200))
    runs = tmp_path / "runs"
    proc = cli_process(study, runs, tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not list(runs.glob("*/checkpoint.pt")):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before its first checkpoint:\n" + (tmp_path / "killed.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    (ckpt,) = runs.glob("*/checkpoint.pt")
    key = ckpt.parent.name
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < steps, "the kill should land in the middle of training"
    assert query(runs, "SELECT status FROM cells") == [("pending",)]
    assert query(runs, "SELECT COUNT(*) FROM metrics") == [(0,)]
    # the losses up to the checkpoint are stored (they are written before the checkpoint)
    recorded = dict(query(runs, "SELECT step, loss FROM losses WHERE cell=?", (key,)))
    assert set(range(10, killed_at + 1, 10)) <= set(recorded)
    # a marker only a restart from scratch would overwrite: resuming must not touch steps <= checkpoint
    execute(runs, "UPDATE losses SET loss=-1 WHERE cell=? AND step=10", (key,))

    frame = ablate.run_study(study, runs_dir=runs, progress=False)

    assert query(runs, "SELECT loss FROM losses WHERE cell=? AND step=10", (key,)) == [(-1.0,)]
    execute(runs, "UPDATE losses SET loss=? WHERE cell=? AND step=10", (recorded[10], key))
    assert query(runs, "SELECT status, step FROM cells") == [("done", steps)]
    assert [s for _, s, _ in losses(runs)] == list(range(10, steps + 1, 10))
    assert_no_duplicates(runs)
    assert query(runs, "SELECT finished IS NOT NULL FROM runs ORDER BY id") == [(0,), (1,)]
    want = {(s, "gmm_fit", k) for s in ("ancestral", REAL) for k in GMM_KEYS} | {("-", "x0_error_by_t", k) for k in X0_KEYS}
    assert {(s, name_of(m), k) for _, s, m, k, *_ in metric_values(runs)} == want
    assert len(frame) == len(want)

    # the same study uninterrupted (in this process): same losses, weights and metric values
    clean = tmp_path / "clean"
    ablate.run_study(study, runs_dir=clean, progress=False)
    assert losses(clean) == losses(runs)
    assert metric_values(clean) == metric_values(runs)
    a = torch.load(clean / key / "checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["step"] == b["step"] == steps
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][n], b[part][n]) for n in a[part]), part


class Killed(BaseException):
    """Stands for a SIGKILL at one precise point: nothing in ablate catches it."""


@pytest.mark.parametrize("victim", ["add_losses", "save_atomic", "update_cell"])
def test_a_kill_between_the_checkpoint_writes_loses_no_loss(tmp_path, monkeypatch, victim):
    """Die inside each write of the second checkpoint (losses, checkpoint file, cell step), then resume:
    the loss curve is complete and equal to an uninterrupted run's, whichever write was cut."""
    import ablate.store
    import ablate.train

    study = write_study(tmp_path, base=gmm("writes", 300, checkpoint_every=100, samples=50))
    clean = tmp_path / "clean"
    ablate.run_study(study, runs_dir=clean, progress=False)

    def dying(original, at_second_checkpoint):
        def wrapper(*args, **kwargs):
            if at_second_checkpoint(*args, **kwargs):
                raise Killed
            return original(*args, **kwargs)
        return wrapper

    when = {
        "add_losses": (ablate.store.Store, lambda self, key, rows: any(s == 200 for s, _ in rows)),
        "save_atomic": (ablate.train, lambda obj, path: obj["step"] == 200),
        "update_cell": (ablate.store.Store, lambda self, key, **fields: fields.get("step") == 200),
    }
    owner, condition = when[victim]
    runs = tmp_path / "runs"
    with monkeypatch.context() as patch:
        patch.setattr(owner, victim, dying(getattr(owner, victim), condition))
        with pytest.raises(Killed):
            ablate.run_study(study, runs_dir=runs, progress=False)
    assert query(runs, "SELECT status FROM cells") == [("pending",)]
    ablate.run_study(study, runs_dir=runs, progress=False)
    assert losses(runs) == losses(clean)
    assert metric_values(runs) == metric_values(clean)
    assert_no_duplicates(runs)


# --- SIGKILL in evaluation (deterministic: a sampler that kills its own process once) ---------------

def test_resume_after_sigkill_in_evaluation(tmp_path):
    marker = tmp_path / "killed.marker"
    samplers = [{"name": "ancestral"}, {"name": "kill_once", "marker": str(marker)}, {"name": "one_step", "jump_at": 50}]
    study = write_study(tmp_path, base=gmm("eval_kill", 100, samples=200), plugins=[str(DATA / "kill_once_sampler.py")],
                        sampler=samplers)
    runs = tmp_path / "runs"
    proc = cli_process(study, runs, tmp_path / "killed.log")
    try:
        assert proc.wait(120) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marker.exists()

    # trained; the diagnostic and the first sampler were evaluated before the kill, the rest not
    assert query(runs, "SELECT status, step FROM cells") == [("trained", 100)]
    done = query(runs, "SELECT sampler, metric, finished FROM evals ORDER BY 1, 2")
    assert [(s, name_of(m)) for s, m, _ in done] == [("-", "x0_error_by_t"), ("ancestral", "gmm_fit"), (REAL, "gmm_fit")]
    train_seconds = query(runs, "SELECT train_seconds FROM cells")
    loss_rows = losses(runs)
    assert_no_duplicates(runs)

    frame = ablate.run_study(study, runs_dir=runs, progress=False)

    assert query(runs, "SELECT status FROM cells") == [("done",)]
    assert query(runs, "SELECT train_seconds FROM cells") == train_seconds  # not retrained
    assert losses(runs) == loss_rows
    after = query(runs, "SELECT sampler, metric, finished FROM evals ORDER BY 1, 2")
    assert set(done) <= set(after)  # the evaluations done before the kill were kept, not redone
    assert sorted((name_of(s), name_of(m)) for s, m, _ in after) == [
        ("-", "x0_error_by_t"), ("ancestral", "gmm_fit"), ("kill_once", "gmm_fit"), ("one_step", "gmm_fit"),
        (REAL, "gmm_fit")]
    assert_no_duplicates(runs)
    want = {(s, "gmm_fit", k) for s in ("ancestral", "kill_once", "one_step", REAL) for k in GMM_KEYS}
    want |= {("-", "x0_error_by_t", k) for k in X0_KEYS}
    got = [(name_of(s), name_of(m), k) for _, s, m, k, *_ in metric_values(runs)]
    assert sorted(got) == sorted(want)
    assert sorted(zip(frame.sampler.map(name_of), frame.metric.map(name_of), frame.key, strict=True)) == sorted(want)
    assert query(runs, "SELECT finished IS NOT NULL FROM runs ORDER BY id") == [(0,), (1,)]
    nfe = dict(query(runs, "SELECT sampler, MAX(nfe) FROM metrics WHERE sampler NOT IN (?, ?) GROUP BY sampler", ("-", REAL)))
    assert {name_of(s): n for s, n in nfe.items()} == {"ancestral": 100, "kill_once": 1, "one_step": 50}


def test_cell_keys_follow_the_config(tmp_path):
    """The run directory names are the hashes of the resolved configs: a changed value is a new cell."""
    study = write_study(tmp_path, base=gmm(), **GRID)
    a = load_study(study)
    b = load_study(study, overrides=["train.steps=201"])
    assert [c.key for c in a.cells] == [c.key for c in load_study(study).cells]
    assert not {c.key for c in a.cells} & {c.key for c in b.cells}
    assert [c.arm for c in a.cells] == ["epsilon", "x0"]
