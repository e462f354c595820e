"""GPU throughput in one run, for one prepared device call (each number labelled with the device):

1. cells per hour with 1, 2, 4 and 8 cells packed on the GPU (`local` executor, workers = n);
2. ancestral sampling steps per second, eager against graph-captured (`train.compile`: CUDA graphs);
3. the UNet training step's model FLOP utilisation against this card's measured bf16 matmul rate.

    .venv/bin/python benchmarks/bench_gpu.py            # on a GPU machine (about 5 minutes)
    .venv/bin/python benchmarks/bench_gpu.py --tiny     # a CPU smoke test of the script itself
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import ablate
from ablate import DataSpec, NetworkDenoiser
from ablate.fast import fast_denoiser

UNET = {"ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [7], "dropout": 0.1}
TINY_UNET = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}

STUDY = """
[study]
name = "bench_packing"
seeds = {seeds}
[data]
name = "{data}"
[model]
name = "unet"
{model}
[schedule]
name = "linear"
T = {T}
[train]
steps = {steps}
batch_size = 128
[eval]
grid_samples = 0
batch_size = 500
[executor]
name = "local"
workers = {workers}
[[metric]]
name = "kid"
num_samples = 500
features = "classifier"
"""


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def packing(counts: list[int], args: argparse.Namespace, model: dict) -> None:
    """Cells per hour when n cells share the device, each in its own process."""
    table = "\n".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                      for k, v in model.items())
    base = None
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            study = Path(tmp) / "study.toml"
            study.write_text(STUDY.format(seeds=list(range(n)), data=args.data, model=table, T=args.T,
                                          steps=args.steps, workers=n))
            t0 = time.perf_counter()
            ablate.run_study(study, runs_dir=Path(tmp) / "runs", progress=False)
            per_hour = n * 3600 / (time.perf_counter() - t0)
        base = base or per_hour
        print(f"RATIO packed_cells n={n}: {per_hour:.0f} cells/hour, {per_hour / base:.2f}x of n=1 "
              f"({args.steps} steps/cell) device: {args.label}", flush=True)


def sampling(device: torch.device, args: argparse.Namespace, model: dict, shape: tuple[int, ...]) -> None:
    registry = ablate.load_registry()
    torch.manual_seed(0)
    net = registry.create("model", "unet", model).build(DataSpec(name="bench", shape=shape)).to(device).eval()
    diffusion = registry.create("schedule", "linear", {"T": args.T}).diffusion()
    target, sampler = registry.create("target", "epsilon", {}), registry.create("sampler", "ancestral", {})
    autocast = device.type == "cuda"
    arms = {"eager": NetworkDenoiser(net, target, diffusion, autocast),
            "graph": fast_denoiser(NetworkDenoiser(net, target, diffusion, autocast), {"compile": True}, device)}
    x = torch.randn(args.batch, *shape, device=device)
    rates = {}
    for name, denoiser in arms.items():
        with torch.inference_mode():
            sampler.sample(denoiser, diffusion, x.clone(), 9, torch.Generator(device).manual_seed(0))  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            sampler.sample(denoiser, diffusion, x.clone(), args.T - 1, torch.Generator(device).manual_seed(0))
            if device.type == "cuda":
                torch.cuda.synchronize()
        rates[name] = args.T / (time.perf_counter() - t0)
    print(f"RATIO sampling graph/eager = {rates['graph'] / rates['eager']:.2f} ({rates['eager']:.0f} -> "
          f"{rates['graph']:.0f} steps/s, batch {args.batch}) device: {args.label}", flush=True)


def mfu(device: torch.device, args: argparse.Namespace, model: dict, shape: tuple[int, ...]) -> None:
    """Model FLOPs of one train step (forward + backward, counted by torch) per second, over the rate
    of a large bf16 matmul measured on the same card."""
    n = 2048 if args.tiny else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0, reps = time.perf_counter(), 5 if args.tiny else 50
    for _ in range(reps):
        a @ b
    sync()
    peak = 2 * n**3 * reps / (time.perf_counter() - t0)
    registry = ablate.load_registry()
    net = registry.create("model", "unet", model).build(DataSpec(name="bench", shape=shape)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(128, *shape, device=device)
    t = torch.randint(args.T, (128,), device=device)

    def step(module: torch.nn.Module) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = module(x, t).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(copy.deepcopy(net))
    flops = counter.get_total_flops()
    for name, module in (("eager", net), ("compiled", torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else None))):
        for _ in range(3):
            step(module)
        sync()
        t0, reps = time.perf_counter(), 3 if args.tiny else 50
        for _ in range(reps):
            step(module)
        sync()
        rate = flops * reps / (time.perf_counter() - t0)
        print(f"RATIO mfu train_step {name} = {rate / peak:.3f} ({rate / 1e12:.2f} of {peak / 1e12:.1f} TFLOP/s "
              f"measured bf16 matmul; {flops / 1e9:.2f} GFLOP/step, batch 128) device: {args.label}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiny", action="store_true", help="CPU, tiny model and steps: checks the script, measures nothing")
    p.add_argument("--steps", type=int, default=2000, help="training steps per packed cell")
    p.add_argument("--batch", type=int, default=256, help="sampling batch")
    args = p.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny to check the script on a CPU")
    args.label, args.T, args.data = device_label(device), 1000, "mnist5k"
    model, shape, counts = UNET, (1, 28, 28), [1, 2, 4, 8]
    if args.tiny:
        args.steps, args.batch, args.T, args.data = 20, 16, 50, "digits"
        model, shape, counts = TINY_UNET, (1, 8, 8), [1, 2]
    sampling(device, args, model, shape)
    mfu(device, args, model, shape)
    packing(counts, args, model)


if __name__ == "__main__":
    main()
