"""Start-up time of the `ablate` command against a bare `python -c pass`, in interleaved rounds.

`ablate --help`, `--version` and `plugins` must not pay for importing torch or pandas they do not use
(target: `ablate --help` <= 0.5 s). Each round runs every command once, in an order that rotates, so
background load hits all alike; the headline is the median over rounds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_HELP_S = 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (each runs every command once)")
    args = p.parse_args()
    ablate = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "ablate --help": [ablate, "--help"],
                "ablate --version": [ablate, "--version"], "ablate plugins": [ablate, "plugins"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    subprocess.run(commands["ablate plugins"], capture_output=True, check=True)  # warm the file cache
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            subprocess.run(commands[name], capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<18} {'median s':>9} {'min s':>7} {'/ python -c pass':>17}")
    for name, ts in times.items():
        print(f"{name:<18} {statistics.median(ts):9.3f} {min(ts):7.3f} {statistics.median(ts) / base:17.1f}")
    help_s = statistics.median(times["ablate --help"])
    print(f"RATIO startup ablate --help / python -c pass = {help_s / base:.1f} "
          f"({help_s:.3f} s; target <= {TARGET_HELP_S} s: {'met' if help_s <= TARGET_HELP_S else 'NOT met'})")


if __name__ == "__main__":
    main()
