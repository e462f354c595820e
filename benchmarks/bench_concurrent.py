"""Two `ablate run`s at once on one machine, each against one run alone, in one process run.

Each round runs the arms in rotating order on fresh runs dirs: `alone` (one run of a tiny gmm2d study)
and `pair` (two runs of it started together). A run's time is its own "done in" (load, train,
evaluate; not the interpreter's start-up). The headline is, per round, the slower of the pair's two
speeds relative to alone (alone / pair_i), median over rounds: 0.5 is a fair half of the machine each,
and the goal is >= 0.4 on 2 cores. `--baseline` adds the same two arms without the thread policy
(torch imported before ablate, so OpenMP spins; torch's default of one thread per core), as before it.
    .venv/bin/python benchmarks/bench_concurrent.py [--rounds 3] [--steps 400] [--baseline]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import interleave, median, tiny_study

# the command before the thread policy: torch loads first (OpenMP reads no wait policy) and keeps its
# default of one thread per core
UNMANAGED = "import sys, torch; from ablate.cli import main; sys.exit(main(sys.argv[1:]))"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def runs(tmp: Path, n: int, managed: bool) -> list[float]:
    """n runs of the study started together; each one's "done in" seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    procs = []
    for _ in range(n):
        where = ["run", str(tmp / "study.toml"), "--runs-dir", tempfile.mkdtemp(dir=tmp)]
        cmd = [sys.executable, "-m", "ablate.cli", *where] if managed else \
            [sys.executable, "-c", UNMANAGED, *where, "--threads", str(cores())]
        log = open(Path(where[-1]) / "stderr.log", "w+")  # a file, not a pipe: progress bars never block a run
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True), log))
    times = []
    for proc, log in procs:
        out, _ = proc.communicate()
        done = re.search(r"done in ([\d.]+)s", out)
        log.seek(0)
        if proc.returncode or not done:
            raise SystemExit(f"a run failed (exit {proc.returncode}):\n{out}{log.read()[-2000:]}")
        log.close()
        times.append(float(done[1]))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=400, help="training steps of each of the study's 2 cells")
    p.add_argument("--baseline", action="store_true", help="also the two arms without the thread policy")
    args = p.parse_args()
    policies = {"policy": True, **({"no policy": False} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "study.toml").write_text(tiny_study("bench_concurrent", args.steps))
        arms = {f"{arm} ({name})": (lambda n=n, m=managed: runs(Path(tmp), n, m))
                for name, managed in policies.items() for arm, n in (("alone", 1), ("pair", 2))}
        times = interleave(arms, args.rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = f"CPU ({platform.processor() or platform.machine()}, {cores()} cores, load average {load:.1f} at the end)"
    for arm, rounds in times.items():
        print(f"{arm}: " + "; ".join(", ".join(f"{t:.1f}s" for t in r) for r in rounds))
    for name in policies:
        alone, pair = times[f"alone ({name})"], times[f"pair ({name})"]
        worst = [a[0] / max(p) for a, p in zip(alone, pair, strict=True)]
        mean = [a[0] * 2 / sum(p) for a, p in zip(alone, pair, strict=True)]
        print(f"RATIO concurrent alone/pair, slower of 2 ({name}) = {median(worst):.2f} (goal >= 0.4; alone/mean "
              f"of the pair {median(mean):.2f}; median of {args.rounds} rounds; 2 cells x {args.steps} steps) device: {device}")


if __name__ == "__main__":
    main()
