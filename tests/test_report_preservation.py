"""The README's quick start on a fresh copy of the repository must not damage the committed reports:
`ablate report` regenerates only what its store holds and keeps (and links) every other report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from studies import TINY, merged, write_study

ROOT = Path(__file__).resolve().parents[1]
# A tiny stand-in for the quick start's study: the name of a committed report and the demo's profile, seconds
# to run (the real quick profile takes minutes), so the report it writes sits beside committed ones.
QUICK_START = merged(TINY, {"study": {"name": "eps_vs_x0", "seeds": [0, 1]}, "data": {"n_train": 1000, "n_test": 200},
                            "model": {"depth": 2},
                            "train": {"steps": 20, "batch_size": 64, "warmup": None, "checkpoint_every": 20, "log_every": 10},
                            "eval": {"grid_samples": 16}, "arm": [{"target": {"name": "epsilon"}}, {"target": {"name": "x0"}}],
                            "metric": [{"name": "gmm_fit", "num_samples": 100},
                                       {"name": "x0_error_by_t", "num_samples": 50, "timesteps": [0, 49]}],
                            "profiles": {"quick": {"train.lr": 1e-3}}})


def _fresh_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_quick_start_keeps_every_other_committed_report(tmp_path):
    repo = tmp_path / "repo"
    _fresh_copy(repo)
    reports = repo / "reports"
    before = _snapshot(reports)
    committed = [json.loads(v) for k, v in before.items() if k.endswith("report.json")]
    assert ("eps_vs_x0", "cpu") in {(e["study"], e["profile"]) for e in committed}  # the committed evidence

    study = write_study(tmp_path, "tiny.toml", base=QUICK_START)
    ablate = [sys.executable, "-m", "ablate.cli"]
    runs = tmp_path / "runs"
    for command in (["run", str(study), "--profile", "quick"], ["report", str(study), "--out", str(reports)]):
        subprocess.run([*ablate, *command, "--runs-dir", str(runs)], cwd=repo, check=True, capture_output=True)
    after = _snapshot(reports)

    # every committed file is untouched but the index; the demo's report goes beside the evidence
    for key in before.keys() - {"README.md"}:
        assert after.get(key) == before[key], key
    added = after.keys() - before.keys()
    assert "eps_vs_x0/quick/README.md" in added and all(k.startswith("eps_vs_x0/quick/") for k in added)
    assert "Other profiles: [cpu](../README.md)" in after["eps_vs_x0/quick/README.md"].decode()

    old_rows = [r for r in before["README.md"].decode().splitlines() if r.startswith("| [")]
    new_rows = [r for r in after["README.md"].decode().splitlines() if r.startswith("| [")]
    assert len(old_rows) == len(committed) and set(old_rows) <= set(new_rows)  # no index row lost or changed
    (quick,) = set(new_rows) - set(old_rows)
    assert "(eps_vs_x0/quick/README.md)" in quick
    assert json.loads(after["eps_vs_x0/quick/report.json"])["conclusion"] in quick
