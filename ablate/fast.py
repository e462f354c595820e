"""The GPU fast path for small models (`train.compile = true`): one launch per step, not one per kernel.

A 4M-parameter UNet at batch 128 is launch-bound on an H100: the Python and kernel-launch overhead of
a step costs more than its arithmetic. torch.compile with mode "reduce-overhead" fuses the kernels
and replays each step as a CUDA graph, for the sampler's denoiser call (T calls per batch) and the
training step alike. Off CUDA (no graphs) the default mode still fuses; the numbers equal eager
within rounding (bf16 tolerance under autocast), which tests/test_fast_path.py checks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ablate.datatypes import NetworkDenoiser


def compiled(module: nn.Module, device: torch.device) -> nn.Module:
    """module compiled for repeated calls at fixed shapes (CUDA graphs on CUDA)."""
    return torch.compile(module, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)


def fast_denoiser(denoiser: Any, train: dict[str, Any], device: torch.device) -> Any:
    """The evaluation's denoiser with its network compiled when the cell asks for it (train.compile);
    other denoisers (the oracle, third-party ones) are returned as they are."""
    if train.get("compile") and type(denoiser) is NetworkDenoiser:
        denoiser.module = compiled(denoiser.module, device)
    return denoiser
