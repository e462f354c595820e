"""Saved sample grids as pictures: what the report draws and what experiment trackers log."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def tile(x: Tensor) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] as one square mosaic [n*(H+2), n*(W+2), C] in [0, 1] (n = floor(sqrt N)),
    each tile framed by a grey border."""
    n = int(math.sqrt(x.shape[0]))
    grid = torch.nn.functional.pad(x[: n * n].float().clamp(-1, 1).add(1).div(2), (1, 1, 1, 1), value=0.5)
    c, h, w = grid.shape[1:]
    return grid.reshape(n, n, c, h, w).permute(0, 3, 1, 4, 2).reshape(n * h, n * w, c)


def grid_image(x: Tensor, pixels: int = 320) -> np.ndarray:
    """A saved grid as an RGB picture [H, W, 3] uint8: images tiled (nearest-neighbour upscaled to about
    `pixels` wide), points drawn as a scatter of their first two coordinates."""
    if x.dim() == 4:
        mosaic = tile(x)
        scale = max(1, pixels // mosaic.shape[1])
        rgb = mosaic.expand(-1, -1, 3) if mosaic.shape[2] == 1 else mosaic
        rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        return (rgb * 255).round().to(torch.uint8).numpy()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(pixels / 80, pixels / 80), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3)
    ax.set_aspect("equal")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
