"""The training loop, readable top to bottom (nanoGPT style): one cell, resumable, deterministic."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ablate.errors import TrainingDiverged
from ablate.interfaces import Data, Model, Schedule, Target, Weighting
from ablate.plugins import Registry
from ablate.store import Store


@dataclass
class Parts:
    """The plugins of one training cell, constructed from its resolved config."""

    schedule: Schedule
    target: Target
    weighting: Weighting
    model: Model

    @classmethod
    def from_config(cls, registry: Registry, config: dict[str, Any]) -> Parts:
        return cls(*(registry.from_table(kind, config[kind]) for kind in ("schedule", "target", "weighting", "model")))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_atomic(obj: dict, path: Path) -> None:
    """Write then rename: a kill mid-write never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    return torch.load(path, map_location=device, weights_only=True) if path.exists() else None


def train_cell(key: str, config: dict[str, Any], parts: Parts, data: Data, run_dir: Path, store: Store,
               progress: bool = True) -> nn.Module:
    """Train one cell to config['train']['steps'] and return its EMA weights (resuming if possible)."""
    tc = config["train"]
    device = pick_device(tc["device"])
    diffusion = parts.schedule.diffusion()
    torch.manual_seed(config["seed"])
    module = parts.model.build(data.spec).to(device)
    ema = copy.deepcopy(module).requires_grad_(False)
    params = [p for p in module.parameters() if p.requires_grad]
    ckpt_path = run_dir / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, device)
    if not parts.model.trainable or not params:
        return ema.eval()
    if ckpt is not None and ckpt["step"] >= tc["steps"]:
        ema.load_state_dict(ckpt["ema"])
        return ema.eval()

    opt = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
    gen = torch.Generator(device).manual_seed(config["seed"])
    step = 0
    if ckpt is not None:  # resume exactly: weights, optimizer, and both random streams
        module.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        gen.set_state(ckpt["gen"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        step = int(ckpt["step"])
    autocast = device.type == "cuda" and tc["bf16"]
    forward = torch.compile(module) if tc["compile"] else module
    x_data = data.train.to(device)
    weights = parts.weighting.weights(diffusion, parts.target, torch.arange(diffusion.T)).float().to(device)
    ema_params, live_params = list(ema.parameters()), list(module.parameters())
    losses: list[tuple[int, float]] = []
    started, seconds_before = time.time(), (store.cell(key) or {}).get("train_seconds", 0.0)
    bar = tqdm(total=tc["steps"], initial=step, desc="  train", unit="step", disable=None if progress else True, leave=False)
    module.train()
    while step < tc["steps"]:
        lr = tc["lr"] * min(1.0, (step + 1) / tc["warmup"]) if tc["warmup"] else tc["lr"]
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(x_data.shape[0], (tc["batch_size"],), generator=gen, device=device)
        x0 = x_data[idx]
        t = torch.randint(diffusion.T, (x0.shape[0],), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        x_t = diffusion.q_sample(x0, t, eps)
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            out = forward(x_t, t)
        per_sample = (out.float() - parts.target.training_target(diffusion, x0, eps, t)).pow(2).flatten(1).mean(1)
        loss = (weights[t] * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc["grad_clip"])
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - tc["ema"])
        step += 1
        if step % tc["log_every"] == 0 or step == tc["steps"]:
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at step {step}")
            losses.append((step, value))
            bar.set_postfix(loss=f"{value:.4f}")
        bar.update(1)
        if step % tc["checkpoint_every"] == 0 or step == tc["steps"]:
            # losses first: a kill between the two writes then only means recomputing (and replacing,
            # with equal values) the losses after the previous checkpoint, never losing them
            store.add_losses(key, losses)
            _copy_buffers(ema, module)  # a resumed or rerun cell then evaluates the same EMA model
            save_atomic({"model": module.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                         "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "step": step}, ckpt_path)
            store.update_cell(key, step=step, train_seconds=seconds_before + time.time() - started)
            losses = []
    bar.close()
    _copy_buffers(ema, module)
    return ema.eval()


@torch.no_grad()
def _copy_buffers(ema: nn.Module, module: nn.Module) -> None:
    """Buffers (e.g. BatchNorm statistics) are not averaged: the EMA model uses the live ones."""
    for b_ema, b_live in zip(ema.buffers(), module.buffers(), strict=True):
        b_ema.copy_(b_live)
