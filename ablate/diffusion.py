"""The DDPM forward process and its Gaussian posterior, built from any schedule's betas.

Timesteps are integer indices t in {0, ..., T-1} (the paper's t is index + 1).
Every table is float64 so that products over 1000 steps and ratios near t = 0 stay
exact; values are cast to the data's dtype when they are used.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Diffusion:
    """Precomputed tables of the forward process q(x_t | x_0) for a beta schedule."""

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0 or bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("betas must be a non-empty sequence in (0, 1)")
        self.betas = betas
        self.T = betas.numel()
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([betas.new_ones(1), self.alpha_bars[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 * x0 + coef_xt * x_t, posterior_variance)
        self.posterior_variance = (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars) * betas
        self.posterior_mean_coef_x0 = self.alpha_bars_prev.sqrt() * betas / (1.0 - self.alpha_bars)
        self.posterior_mean_coef_xt = self.alphas.sqrt() * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        self.snr = self.alpha_bars / (1.0 - self.alpha_bars)
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()
        self._moved: dict[tuple[int, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def at(self, table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """table[t] as a [B, 1, ...] tensor that broadcasts against `like`."""
        moved = table
        if table.device != like.device or table.dtype != like.dtype:  # one copy per device and dtype, not per call
            key = (id(table), like.device, like.dtype)
            source, moved = self._moved.get(key, (None, None))
            if source is not table:  # the cache holds `source`, so its id cannot be reused while cached
                moved = table.to(device=like.device, dtype=like.dtype)
                self._moved[key] = (table, moved)
        values = moved[t.to(like.device)]
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        return self.at(self.sqrt_alpha_bars, t, x0) * x0 + self.at(self.sqrt_one_minus_alpha_bars, t, x0) * eps

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return self.at(self.posterior_mean_coef_x0, t, x_t) * x0 + self.at(self.posterior_mean_coef_xt, t, x_t) * x_t

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return (x_t - self.at(self.sqrt_one_minus_alpha_bars, t, x_t) * eps) / self.at(self.sqrt_alpha_bars, t, x_t)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return (x_t - self.at(self.sqrt_alpha_bars, t, x_t) * x0) / self.at(self.sqrt_one_minus_alpha_bars, t, x_t)
