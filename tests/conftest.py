"""Shared fixtures: the registry of built-in plugins and independently computed reference tables.

The reference tables are built here with plain Python / numpy from the closed forms in
SOURCE-NOTES.md (linear betas) and Nichol & Dhariwal (cosine), never from `ablate` itself.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ablate

# Only the built-in plugins: third-party packages installed in the venv must not leak in.
os.environ["ABLATE_LOAD_PLUGINS"] = ""

# The samplers run 1000 steps on small tensors: intra-op threads only add synchronisation, which
# costs 5-8x when the two cores are shared with another process (e.g. a study running beside).
torch.set_num_threads(1)

T = 1000


def linear_betas(T: int = T, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    return np.array([start + (end - start) * i / (T - 1) for i in range(T)], dtype=np.float64)


def cosine_f(t: float, T: int, s: float = 0.008) -> float:
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int = T, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    return np.array(
        [min(1 - cosine_f(i + 1, T, s) / cosine_f(i, T, s), max_beta) for i in range(T)], dtype=np.float64
    )


def reference_tables(betas: np.ndarray) -> SimpleNamespace:
    """alphas, alpha_bars (running product, python loop), alpha_bars_prev, snr, posterior variance."""
    alphas = [1.0 - float(b) for b in betas]
    abar, running = [], 1.0
    for a in alphas:
        running *= a
        abar.append(running)
    abar_np = np.array(abar)
    abar_prev = np.concatenate([[1.0], abar_np[:-1]])
    return SimpleNamespace(
        betas=np.asarray(betas, dtype=np.float64),
        alphas=np.array(alphas),
        abar=abar_np,
        abar_prev=abar_prev,
        snr=abar_np / (1.0 - abar_np),
        T=len(alphas),
    )


@pytest.fixture(scope="session")
def registry():
    return ablate.load_registry()


@pytest.fixture(scope="session", params=["linear", "cosine"])
def schedule(request, registry):
    """(name, Diffusion built through the schedule plugin, independent reference tables)."""
    name = request.param
    diffusion = registry.create("schedule", name, {"T": T}).diffusion()
    betas = linear_betas() if name == "linear" else cosine_betas()
    return SimpleNamespace(name=name, diffusion=diffusion, ref=reference_tables(betas))


@pytest.fixture(scope="session")
def linear(registry):
    diffusion = registry.create("schedule", "linear", {"T": T}).diffusion()
    return SimpleNamespace(name="linear", diffusion=diffusion, ref=reference_tables(linear_betas()))
