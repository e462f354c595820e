"""A tiny gmm2d study (4 cells) under `ray` with 2 workers against `local` with 1, in one process run.

Each round runs both arms on fresh runs dirs (order alternating); the ratio is local / ray wall time
of the whole `run_study` (Ray's start-up included: it is part of what a user waits for).
    .venv/bin/python benchmarks/bench_executors.py [--rounds 2] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from common import tiny_study

import ablate

ARMS = {"local x1": 'name = "local"', "ray x2": 'name = "ray"\ncpus_per_cell = 1'}


def run(tmp: Path, arm: str, steps: int) -> float:
    study = tmp / f"{arm.replace(' ', '_')}.toml"
    study.write_text(tiny_study("bench_executors", steps, "[grid]\ntarget = [{ name = \"epsilon\" }, { name = \"x0\" }]\n[executor]\n" + ARMS[arm]))
    runs = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    ablate.run_study(study, runs_dir=runs, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args()
    device = f"CPU ({platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores)"
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for arm in (list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]):
                times[arm].append(run(Path(tmp), arm, args.steps))
                print(f"round {r}: {arm}: {times[arm][-1]:.1f}s", flush=True)
    ratios = [a / b for a, b in zip(times["local x1"], times["ray x2"], strict=True)]
    print(f"RATIO executors local_x1/ray_x2 = {statistics.median(ratios):.2f} (median of {args.rounds} rounds; "
          f"4 cells, {args.steps} steps each) device: {device}")


if __name__ == "__main__":
    main()
