"""Training-step overhead: ablate.train.train_cell against a bare PyTorch loop doing the same work.

Both arms build the same network from the same plugin, draw the same batch size with a
seeded generator, form x_t with the same q_sample, regress eps with an MSE, clip the gradient
norm, step AdamW with the same warmup and update an EMA copy. The ablate arm additionally has
whatever train_cell does per step (autocast context, target/weighting plugins, periodic loss
logging with its .item() sync, the tqdm bar, checkpoint checks) and once per call (setup,
the final atomic checkpoint, store writes). Nothing of ablate is patched except that a forward
pre-hook on the network stamps the time of each step (the bare arm gets the same hook).

Two ratios are printed, both ablate/bare as the median over interleaved rounds of the round's ratio
(the two arms of a round run back to back, so slow changes in background load cancel):
  train_step  steady-state seconds per step: the median over 10-step blocks (one log_every period each)
              after the first `--skip` steps, timed between the network's forward calls (the headline);
  train_call  the whole call (setup + all steps + final checkpoint + store writes), for context.

    .venv/bin/python benchmarks/bench_train_overhead.py [--device cuda] [--threads N] [--models mlp,mlp2d,unet]
    .venv/bin/python benchmarks/bench_train_overhead.py --threads 1 --clock cpu   # steadier on a busy CPU
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ablate.cell import Parts
from ablate.plugins import config_hash, load_registry
from ablate.schema import TrainConfig
from ablate.store import Store
from ablate.train import train_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASET_OF,
    MODELS,
    Stamps,
    describe,
    fmt,
    interleave,
    median,
    now,
    paired_ratio,
    parser,
    ratio_line,
    set_clock,
    setup_torch,
    sync,
)


def cell_config(model: str, args: argparse.Namespace) -> dict:
    """A resolved cell config, as ablate.study would produce it."""
    train = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=args.steps + 1,
                        device=args.device, bf16=not args.no_bf16).model_dump()
    return {"data": DATASET_OF[model], "model": MODELS[model], "schedule": {"name": "linear", "T": 1000},
            "target": {"name": "epsilon"}, "weighting": {"name": "simple"}, "train": train, "seed": 0}


def run_ablate(config: dict, registry, data, workdir: Path, device: torch.device, skip: int) -> tuple[float, float]:
    """One fresh train_cell call (new run dir, new store row, so nothing resumes)."""
    config = copy.deepcopy(config)
    config["bench_nonce"] = time.time_ns()  # a fresh cell key every call
    key = config_hash(config)
    run_dir = workdir / key
    run_dir.mkdir(parents=True)
    store = Store(workdir / "ablate.db")
    run_id = store.start_run("bench", None, "-", {}, {}, {})
    store.add_cell(run_id, key, config, "bench", config["seed"])
    parts = Parts.from_config(registry, config)
    stamps, build = Stamps(), parts.model.build

    def hooked_build(spec):
        module = build(spec)
        module.register_forward_pre_hook(stamps)
        return module

    parts.model.build = hooked_build  # type: ignore[method-assign]
    sync(device)
    t0 = now()
    train_cell(key, config, parts, data, run_dir, store, progress=False)
    sync(device)
    total = now() - t0
    store.close()
    return total, stamps.per_step(skip, block=10)


def run_bare(config: dict, registry, data, device: torch.device, skip: int) -> tuple[float, float]:
    """The same training written as a plain loop: no store, no checkpoint, no progress bar, no plugins per step."""
    tc = config["train"]
    sync(device)
    t0 = now()
    torch.manual_seed(config["seed"])
    spec = {k: v for k, v in config["model"].items() if k != "name"}
    module = registry.create("model", config["model"]["name"], spec).build(data.spec).to(device)
    stamps = Stamps()
    module.register_forward_pre_hook(stamps)
    ema = copy.deepcopy(module).requires_grad_(False)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
    gen = torch.Generator(device).manual_seed(config["seed"])
    T = config["schedule"]["T"]
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)
    sqrt_abar, sqrt_1m_abar = abar.sqrt().float().to(device), (1 - abar).sqrt().float().to(device)
    x_data = data.train.to(device)
    bcast = (-1,) + (1,) * (x_data.dim() - 1)
    ema_params, live_params = list(ema.parameters()), list(module.parameters())
    autocast = device.type == "cuda" and tc["bf16"]
    module.train()
    for step in range(tc["steps"]):
        lr = tc["lr"] * min(1.0, (step + 1) / tc["warmup"]) if tc["warmup"] else tc["lr"]
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(x_data.shape[0], (tc["batch_size"],), generator=gen, device=device)
        x0 = x_data[idx]
        t = torch.randint(T, (x0.shape[0],), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        x_t = sqrt_abar[t].view(bcast) * x0 + sqrt_1m_abar[t].view(bcast) * eps
        if autocast:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = module(x_t, t)
        else:
            out = module(x_t, t)
        loss = F.mse_loss(out.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc["grad_clip"])
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - tc["ema"])
    sync(device)
    return now() - t0, stamps.per_step(skip, block=10)


def bench_model(model: str, args: argparse.Namespace, registry, workdir: Path, device: torch.device) -> float:
    config = cell_config(model, args)
    ds = config["data"]
    data = registry.create("dataset", ds["name"], {k: v for k, v in ds.items() if k != "name"}).load()
    model_spec = {k: v for k, v in MODELS[model].items() if k != "name"}
    n_params = sum(p.numel() for p in registry.create("model", MODELS[model]["name"], model_spec).build(data.spec).parameters())
    print(f"\n== {model} {MODELS[model]} on {ds['name']} {tuple(data.spec.shape)}: {n_params:,} params, "
          f"batch {args.batch}, {args.steps} steps, {args.rounds} interleaved rounds")
    warm = dict(config, train=dict(config["train"], steps=args.skip + 12))
    run_ablate(warm, registry, data, workdir, device, args.skip)  # warm-up: allocator, kernels, lazy imports
    run_bare(warm, registry, data, device, args.skip)
    results: dict[str, list[tuple[float, float]]] = {"ablate": [], "bare": []}

    def arm(name: str, fn):
        def go() -> float:
            results[name].append(fn())
            return results[name][-1][1]
        return go

    interleave({"ablate": arm("ablate", lambda: run_ablate(config, registry, data, workdir, device, args.skip)),
                "bare": arm("bare", lambda: run_bare(config, registry, data, device, args.skip))}, args.rounds)
    step = {k: [s for _, s in v] for k, v in results.items()}
    call = {k: [c for c, _ in v] for k, v in results.items()}
    for k in results:
        print(f"  {k:6s} per step  {fmt(step[k])}")
    for k in results:
        print(f"  {k:6s} per call  {fmt(call[k], 1.0, 's')}")
    r_step, r_call = paired_ratio(step["ablate"], step["bare"]), paired_ratio(call["ablate"], call["bare"])
    print(f"  per step: {ratio_line(step['ablate'], step['bare'])}")
    print(f"  per call: {ratio_line(call['ablate'], call['bare'])}")
    # what a call spends beyond steps x steady-state step time: setup, warm-up steps, final checkpoint, store
    fixed = {k: median([c - s * args.steps for c, s in results[k]]) for k in results}
    print(f"  beyond the steady-state steps: ablate {fixed['ablate'] * 1e3:.0f} ms, bare {fixed['bare'] * 1e3:.0f} ms per call")
    print(f"RATIO train_call[{model}] ablate/bare = {r_call:.2f}")
    print(f"RATIO train_step[{model}] ablate/bare = {r_step:.2f}")
    return r_step


def main() -> None:
    p = parser(__doc__.split("\n")[0], "train both arms")
    p.add_argument("--models", default="mlp", help=f"comma-separated, from {sorted(MODELS)}")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per call")
    p.add_argument("--batch", type=int, default=128, help="batch size (TrainConfig default: 128)")
    p.add_argument("--skip", type=int, default=20, help="steps left out of the steady-state per-step time")
    args = p.parse_args()
    device = setup_torch(args.threads, args.device)
    set_clock(args.clock, device)
    if args.steps <= args.skip + 10:
        raise SystemExit("--steps must exceed --skip by more than 10")
    print(f"{describe(device)}, clock {args.clock}")
    registry = load_registry()
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        workdir = Path(tmp)
        for model in args.models.split(","):
            worst = max(worst, bench_model(model, args, registry, workdir, device))
    print(f"\nRATIO train_step ablate/bare = {worst:.2f}  (target <= 1.05; worst over models: {args.models})")


if __name__ == "__main__":
    main()
