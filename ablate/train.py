"""The training loop, readable top to bottom (nanoGPT style): one cell, resumable, deterministic."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ablate.cell import Parts, pick_device
from ablate.datatypes import Data
from ablate.errors import TrainingDiverged
from ablate.fast import compiled
from ablate.store import Store


def save_atomic(obj: dict, path: Path) -> None:
    """Write then rename: a kill mid-write never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


CHECKPOINT_KEYS = {"model", "ema", "opt", "gen", "torch_rng", "step"}


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The checkpoint, or None when there is none or it cannot be read (truncated, corrupted, or holding
    anything but tensors: weights_only=True never runs pickled code). An unreadable one is moved aside
    to `<name>.corrupt` with a warning, and the cell trains again from scratch."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        missing = CHECKPOINT_KEYS - set(ckpt) if isinstance(ckpt, dict) else CHECKPOINT_KEYS
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
    except Exception as exc:  # whatever the damage, the cell's own config can rebuild it
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        reason = str(exc).splitlines()[0] if str(exc) else ""
        warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {reason}); moved to {aside.name}, "
                      "training this cell again from scratch", stacklevel=2)
        return None
    return ckpt


def ema_decay(ema: float, step: int) -> float:
    """The EMA decay for the update after `step` completed steps: warms up from 0.1 so the evaluated
    weights do not keep a share of the random initialisation (min(ema, (1 + n) / (10 + n)))."""
    return min(ema, (1 + step) / (10 + step))


def learning_rate(tc: dict[str, Any], step: int) -> float:
    """Linear warmup, then constant or a cosine decay to 0 at the last step (a fixed budget converges
    further when the step size shrinks at its end)."""
    warm = min(1.0, (step + 1) / tc["warmup"]) if tc["warmup"] else 1.0
    if tc.get("lr_decay", "none") == "cosine" and step >= tc["warmup"]:
        done = (step - tc["warmup"]) / max(1, tc["steps"] - tc["warmup"])
        return tc["lr"] * 0.5 * (1 + math.cos(math.pi * done))
    return tc["lr"] * warm


@torch.no_grad()
def trivial_loss(parts: Parts, diffusion, x_data: torch.Tensor, weights: torch.Tensor, seed: int, n: int = 8192) -> float:
    """The training loss of a network that outputs 0 (for epsilon: 1.0): a cell whose final loss is not
    below it has learnt nothing. Its own random stream, so the training draws are untouched."""
    gen = torch.Generator(x_data.device).manual_seed(seed + 7919)
    x0 = x_data[torch.randint(x_data.shape[0], (n,), generator=gen, device=x_data.device)]
    t = torch.randint(diffusion.T, (n,), generator=gen, device=x_data.device)
    eps = torch.randn(x0.shape, generator=gen, device=x_data.device)
    target = parts.target.training_target(diffusion, x0, eps, t).float()
    return float((weights[t] * target.pow(2).flatten(1).mean(1)).mean())


def train_cell(key: str, config: dict[str, Any], parts: Parts, data: Data, run_dir: Path, store: Store,
               progress: bool = True, at_steps: tuple[int, ...] = (),
               on_step: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Train one cell to config['train']['steps'] and return its EMA weights (resuming if possible).

    At each step of `at_steps` the cell is checkpointed, then `on_step(step, ema)` runs (learning
    curves); a resumed cell first repeats the call for the step it stopped at (it skips finished work)."""
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
    if on_step is not None and step in at_steps:
        on_step(step, ema.eval())
    autocast = device.type == "cuda" and tc["bf16"]
    forward = compiled(module, device) if tc["compile"] else module  # CUDA graphs on a GPU (ablate.fast)
    x_data = data.train.to(device)
    weights = parts.weighting.weights(diffusion, parts.target, torch.arange(diffusion.T)).float().to(device)
    if step == 0:
        store.update_cell(key, trivial_loss=trivial_loss(parts, diffusion, x_data, weights, config["seed"]))
    ema_params, live_params = list(ema.parameters()), list(module.parameters())
    losses: list[tuple[int, float]] = []
    state = store.cell(key) or {}
    started, seconds_before = time.time(), state.get("train_seconds", 0.0)
    clipped = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: no sync per step
    clipped_before = state.get("clipped_steps", 0)
    bar = tqdm(total=tc["steps"], initial=step, desc="  train", unit="step", disable=None if progress else True, leave=False)
    # without a terminal (CI, a log file) tqdm is silent: print a line every tenth of the run instead
    log_lines = progress and bar.disable
    module.train()
    while step < tc["steps"]:
        lr = learning_rate(tc, step)
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
        clipped += torch.nn.utils.clip_grad_norm_(params, tc["grad_clip"]) > tc["grad_clip"]
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - ema_decay(tc["ema"], step))
        step += 1
        if step % tc["log_every"] == 0 or step == tc["steps"]:
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at step {step}")
            losses.append((step, value))
            bar.set_postfix(loss=f"{value:.4f}")
        bar.update(1)
        if log_lines and (step % max(1, tc["steps"] // 10) == 0 or step == tc["steps"]):
            print(f"  train step {step}/{tc['steps']}, loss {loss.item():.4f}, {time.time() - started:.0f}s", flush=True)
        if step % tc["checkpoint_every"] == 0 or step == tc["steps"] or step in at_steps:
            # losses first: a kill between the two writes then only means recomputing (and replacing,
            # with equal values) the losses after the previous checkpoint, never losing them
            store.add_losses(key, losses)
            _copy_buffers(ema, module)  # a resumed or rerun cell then evaluates the same EMA model
            save_atomic({"model": module.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                         "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "step": step}, ckpt_path)
            store.update_cell(key, step=step, train_seconds=seconds_before + time.time() - started,
                              clipped_steps=clipped_before + int(clipped))
            losses = []
            if on_step is not None and step in at_steps:
                on_step(step, ema.eval())
                module.train()
    bar.close()
    _copy_buffers(ema, module)
    return ema.eval()


@torch.no_grad()
def _copy_buffers(ema: nn.Module, module: nn.Module) -> None:
    """Buffers (e.g. BatchNorm statistics) are not averaged: the EMA model uses the live ones."""
    for b_ema, b_live in zip(ema.buffers(), module.buffers(), strict=True):
        b_ema.copy_(b_live)
