"""Shared helpers of the benchmarks: model configs, timing, interleaving, medians."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

# Model tables exactly as a study file would write them (the resolved cell config's [model]).
MODELS: dict[str, dict] = {
    "mlp": {"name": "mlp", "hidden": 512, "depth": 4},
    "mlp2d": {"name": "mlp", "hidden": 128, "depth": 3},
    "unet": {"name": "unet", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.1},
}
# Which dataset each model runs on: digits are [1, 8, 8] images, gmm2d is 2-D points.
DATASET_OF = {"mlp": {"name": "digits"}, "mlp2d": {"name": "gmm2d"}, "unet": {"name": "digits"}}


def parser(description: str, what: str) -> argparse.ArgumentParser:
    """The flags both benchmarks share; `what` says what --no-bf16 turns to fp32."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each runs every arm once)")
    p.add_argument("--no-bf16", action="store_true", help=f"on CUDA, {what} in fp32 (default: bf16 autocast, as ablate)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or this process's CPU time (steadier on a shared CPU with --threads 1)")
    return p


def setup_torch(threads: int | None, device: str) -> torch.device:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch.cuda.is_available() is False")
    return dev


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_clock = time.perf_counter


def set_clock(name: str, device: torch.device) -> None:
    """'wall' (perf_counter) or 'cpu' (process_time: CPU seconds of this process, all its threads).

    On a CPU shared with other jobs, `--threads 1 --clock cpu` leaves out the time this process
    sat descheduled, which wall time cannot; with several threads, spin-waits count as CPU time."""
    global _clock
    if name == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu only makes sense with --device cpu")
    _clock = time.process_time if name == "cpu" else time.perf_counter


def now() -> float:
    return _clock()


class Stamps:
    """A forward pre-hook that records when each network call begins: one call per training or sampling step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, module, inputs) -> None:
        self.times.append(_clock())

    def reset(self) -> None:
        self.times = []

    def per_step(self, skip: int = 0, block: int = 1) -> float:
        """Median over blocks of `block` consecutive steps (after the first `skip`) of seconds per step.

        A median is robust to bursts of background load within a call; blocks as long as a periodic
        chore (ablate logs the loss every 10 steps) keep that chore's cost in every block."""
        ts = self.times[skip:]
        return median([(ts[i + block] - ts[i]) / block for i in range(0, len(ts) - block, block)])


def interleave(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every arm once per round, rotating the order each round so drift, background load and the
    after-effects of the previous call (e.g. a checkpoint being written back) hit all arms alike."""
    names = list(arms)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)  # every arm takes every position equally often (A B, B A, A B, ...)
        order = names[shift:] + names[:shift]
        for n in order:
            out[n].append(arms[n]())
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i]: both arms of a round ran back to back under the same load."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def ratio_line(a: list[float], b: list[float]) -> str:
    return (f"paired median {paired_ratio(a, b):.3f}, ratio of medians {median(a) / median(b):.3f}, "
            f"ratio of minima {min(a) / min(b):.3f}")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = f"{platform.processor() or platform.machine()}, torch threads={torch.get_num_threads()}"
    return f"torch {torch.__version__}, device {device} ({hw})"


def fmt(xs: list[float], scale: float = 1e3, unit: str = "ms") -> str:
    return f"median {median(xs) * scale:9.3f} {unit}  (runs: {', '.join(f'{x * scale:.3f}' for x in xs)})"


def tiny_study(name: str, steps: int, extra: str = "") -> str:
    """A two-seed gmm2d study small enough to time whole runs of (extra: more TOML tables)."""
    return f"""
[study]
name = "{name}"
seeds = [0, 1]
[data]
name = "gmm2d"
[model]
name = "mlp"
hidden = 128
depth = 3
[schedule]
name = "linear"
T = 200
[train]
steps = {steps}
device = "cpu"
[eval]
grid_samples = 0
{extra}
[[metric]]
name = "gmm_fit"
num_samples = 1000
"""
