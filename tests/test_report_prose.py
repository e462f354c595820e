"""What a newcomer reads in a report: the per-seed table of every arm (not only the declared ones), an index
whose conclusion column is the conclusion (the hardware is the report's Setup), and the thread count in words."""

from __future__ import annotations

from ablate.cli import main
from ablate.store import REAL_DATA, Store

KID = {"epsilon": [10.0, 11.0, 12.0], "x0": [20.0, 22.0, 25.0], "v": [30.0, 31.0, 33.0]}
KEYS = {"kid": {"kid": {"direction": "lower", "role": "headline", "nonnegative": True, "description": "kernel distance"}}}
CONTRAST = {"metric": "kid", "baseline": "epsilon", "compare": ["x0"], "over": "arm", "sampler": "ancestral", "arm": None,
            "margin": 2.0, "relative": False, "name": "x0 vs eps"}


def _store(db) -> None:
    """A stored run of three arms x three seeds whose one declared contrast leaves the arm `v` out."""
    store = Store(db)
    run = store.start_run("prose", "quick", "/nonexistent/prose.toml", {"cpu": "Test CPU", "device": "cpu", "torch_threads": 1},
                          {"sampler/ancestral": "built-in"}, {"metric_keys": KEYS, "contrasts": [CONTRAST]})
    for arm, values in KID.items():
        for seed, value in enumerate(values):
            key = f"{arm}{seed}"
            store.add_cell(run, key, {"target": {"name": arm}, "seed": seed}, arm, seed)
            store.update_cell(key, status="done", train_seconds=1.0, num_params=10)
            store.add_metric(key, "ancestral", "kid", {"kid": value}, 100, 1000, 2.0)
            store.add_metric(key, REAL_DATA, "kid", {"kid": 3.0}, 100, 0, 0.1)
    store.finish_run(run)
    store.close()


def test_per_seed_table_has_every_arm_and_the_index_no_hardware(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "reports"
    _store(runs / "ablate.db")
    assert main(["report", "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = (out / "prose" / "README.md").read_text()
    per_seed = text.split("### Per-seed kid")[1].split("##")[0]
    assert "| epsilon | ancestral | 10 | 11 | 12 |" in per_seed and "| x0 | ancestral | 20 | 22 | 25 |" in per_seed
    assert "| v | ancestral | 30 | 31 | 33 |" in per_seed  # not in any contrast, yet its seeds are there to redo a test
    assert REAL_DATA not in per_seed
    assert "- Hardware: Test CPU (1 thread); device `cpu`" in text
    row = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("| [prose]"))
    assert row.split(" | ")[2].startswith("x0 vs eps: ") and "Test CPU" not in row
