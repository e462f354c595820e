"""Ancestral sampling: ablate's `ancestral` sampler against a naive DDPM loop (Ho et al. 2020, Algorithm 2) (and diffusers, if installed).

All arms run T reverse steps from the same x_T on the same network (an untrained one: the
timing does not depend on the weights) and batch, under no_grad (ablate: its NetworkDenoiser's).

  ablate     what ablate.evaluate.evaluate_cell runs per batch: the `ancestral` sampler plugin
             (plugins/samplers.py: ancestral_steps) through CountingDenoiser (bar disabled) around the
             model plugin's NetworkDenoiser with the `epsilon` target and the `linear` schedule.
  naive      a tutorial's DiffusionProcess._one_diffusion_step (Ho et al. 2020, Algorithm 2), re-implemented
             faithfully: float32 tables built its way (betas/alphas on the CPU, alpha_bars on the
             device), per step sqrt_tilde_beta from the tables, eps = net(x, t),
             mu = sqrt(1/alpha) (x - beta / sqrt(1 - abar) eps), x = mu + sigma z (z = 0 at the last step).
  diffusers  DDPMScheduler(linear, epsilon, fixed_small, no clipping).step in a loop, if importable.

Ratios are ablate/other: the median over interleaved rounds of the round's ratio, for the
steady-state time per step (median interval between network calls, from a forward pre-hook;
the headline) and for the whole call.

    .venv/bin/python benchmarks/bench_sampling.py [--device cuda] [--batch 256] [--steps 1000] [--model mlp]
    .venv/bin/python benchmarks/bench_sampling.py --model mlp2d --batch 1000 --threads 1 --clock cpu
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ablate.evaluate import CountingDenoiser
from ablate.plugins import load_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASET_OF,
    MODELS,
    Stamps,
    describe,
    fmt,
    interleave,
    now,
    paired_ratio,
    parser,
    ratio_line,
    set_clock,
    setup_torch,
    sync,
)


class DiffusionProcess:
    """A tutorial's DDPM sampler (Ho et al. 2020, Algorithm 2), unchanged except that `sampling` takes x_T
    (so every arm starts from the same noise) and no list of intermediates is kept (only_final)."""

    def __init__(self, beta_1, beta_T, T, diffusion_fn, device, shape):
        self.betas = torch.linspace(start=beta_1, end=beta_T, steps=T)
        self.alphas = 1 - self.betas
        self.alpha_bars = torch.cumprod(1 - torch.linspace(start=beta_1, end=beta_T, steps=T), dim=0).to(device=device)
        self.alpha_prev_bars = torch.cat([torch.Tensor([1]).to(device=device), self.alpha_bars[:-1]])
        self.shape = shape
        self.diffusion_fn = diffusion_fn
        self.device = device

    def _one_diffusion_step(self, x):
        for idx in reversed(range(len(self.alpha_bars))):
            noise = torch.zeros_like(x) if idx == 0 else torch.randn_like(x)
            sqrt_tilde_beta = torch.sqrt((1 - self.alpha_prev_bars[idx]) / (1 - self.alpha_bars[idx]) * self.betas[idx])
            predict_epsilon = self.diffusion_fn(x, idx)
            mu_theta_xt = torch.sqrt(1 / self.alphas[idx]) * (x - self.betas[idx] / torch.sqrt(1 - self.alpha_bars[idx]) * predict_epsilon)
            x = mu_theta_xt + sqrt_tilde_beta * noise
            yield x

    @torch.no_grad()
    def sampling(self, sample):
        final = None
        for sample in self._one_diffusion_step(sample):  # noqa: B020 (the tutorial's own loop)
            final = sample
        return final


def main() -> None:
    p = parser(__doc__.split("\n")[0], "sample")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=256, help="samples per call (ablate's eval batch_size default is 1000)")
    p.add_argument("--steps", type=int, default=1000, help="T: diffusion steps of the linear schedule")
    args = p.parse_args()
    device = setup_torch(args.threads, args.device)
    set_clock(args.clock, device)
    autocast = device.type == "cuda" and not args.no_bf16
    print(f"{describe(device)}, clock {args.clock}")

    registry = load_registry()
    ds = DATASET_OF[args.model]
    data = registry.create("dataset", ds["name"], {k: v for k, v in ds.items() if k != "name"}).load()
    model = registry.create("model", MODELS[args.model]["name"], {k: v for k, v in MODELS[args.model].items() if k != "name"})
    torch.manual_seed(0)
    module = model.build(data.spec).to(device).eval()
    stamps = Stamps()
    module.register_forward_pre_hook(stamps)
    T, B = args.steps, args.batch
    shape = (B, *data.spec.shape)
    print(f"{args.model} {MODELS[args.model]} on {ds['name']}: {sum(p.numel() for p in module.parameters()):,} params, "
          f"batch {B}, T={T}, bf16 autocast {autocast}, {args.rounds} interleaved rounds")

    # ablate, as evaluate_cell wires it
    schedule = registry.create("schedule", "linear", {"T": T})
    diffusion = schedule.diffusion()
    target = registry.create("target", "epsilon")
    denoiser = model.denoiser(module, target, diffusion, data.spec, autocast=autocast)
    sampler = registry.create("sampler", "ancestral")
    counter = CountingDenoiser(denoiser, tqdm(disable=True))

    # the naive loop; its network takes the integer timestep
    def diffusion_fn(x, idx):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = module(x, torch.full((x.shape[0],), idx, dtype=torch.long, device=x.device))
        return out.to(x.dtype)

    naive = DiffusionProcess(1e-4, 0.02, T, diffusion_fn, device, data.spec.shape)

    # check that both compute the same reverse step: mean and sigma at a few t, same x and network
    def check_step(t):
        tt = torch.full((B,), t, dtype=torch.long, device=device)
        mean_a = diffusion.posterior_mean(denoiser(x, tt).x0, x, tt)
        eps = diffusion_fn(x, t)
        mean_n = torch.sqrt(1 / naive.alphas[t]) * (x - naive.betas[t] / torch.sqrt(1 - naive.alpha_bars[t]) * eps)
        sig_a = float(diffusion.posterior_variance[t]) ** 0.5
        sig_n = float(torch.sqrt((1 - naive.alpha_prev_bars[t]) / (1 - naive.alpha_bars[t]) * naive.betas[t]))
        return mean_a, mean_n, sig_a, sig_n

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    worst = 0.0
    for t in (T - 1, T // 2, 1) if T > 2 else (1,):
        with torch.no_grad():
            mean_a, mean_n, sig_a, sig_n = check_step(t)
        worst = max(worst, float((mean_a - mean_n).abs().max() / mean_n.abs().max()), abs(sig_a - sig_n) / sig_n)
    print(f"same update: max relative difference of the step mean / sigma between ablate and naive = {worst:.1e}")

    arms = {}
    results: dict[str, list[tuple[float, float]]] = {}

    def arm(name, fn):
        results[name] = []

        def go() -> float:
            x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
            stamps.reset()
            seconds = timed_call(lambda: fn(x_T))
            results[name].append((seconds, stamps.per_step()))
            return seconds
        arms[name] = go

    def timed_call(fn) -> float:
        sync(device)
        t0 = now()
        fn()
        sync(device)
        return now() - t0

    def run_ablate(x_T):
        gen = torch.Generator(device).manual_seed(0)
        return sampler.sample(counter, diffusion, x_T, T - 1, gen)

    arm("ablate", run_ablate)
    arm("naive", naive.sampling)
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        print("diffusers is not importable here: the ablate/diffusers comparison is skipped (not installed on purpose)")
    else:
        sched = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                              prediction_type="epsilon", variance_type="fixed_small", clip_sample=False)
        sched.set_timesteps(T)

        @torch.no_grad()
        def run_diffusers(x_T):
            gen = torch.Generator(device).manual_seed(0)
            x = x_T
            for t in sched.timesteps:
                eps = diffusion_fn(x, int(t))
                x = sched.step(eps, t, x, generator=gen).prev_sample
            return x

        arm("diffusers", run_diffusers)

    for go in arms.values():  # warm-up
        go()
    for v in results.values():
        v.clear()
    interleave(arms, args.rounds)

    step = {k: [s for _, s in v] for k, v in results.items()}
    call = {k: [c for c, _ in v] for k, v in results.items()}
    for k in results:
        print(f"  {k:9s} per step  {fmt(step[k])}")
    for k in results:
        print(f"  {k:9s} per call  {fmt(call[k], 1.0, 's')}")
    lines = []
    for other in [k for k in results if k != "ablate"]:
        r_step, r_call = paired_ratio(step["ablate"], step[other]), paired_ratio(call["ablate"], call[other])
        print(f"  ablate/{other} per step: {ratio_line(step['ablate'], step[other])}")
        print(f"  ablate/{other} per call: {ratio_line(call['ablate'], call[other])}")
        print(f"RATIO sampling_call[{args.model}] ablate/{other} = {r_call:.2f}")
        print(f"RATIO sampling[{args.model}] ablate/{other} = {r_step:.2f}")
        target = "<= 1.05" if other == "naive" else "< 1"
        lines.append(f"RATIO sampling ablate/{other} = {r_step:.2f}  (target {target}; {args.model}, batch {B}, T={T})")
    if "diffusers" not in results:
        lines.append("RATIO sampling ablate/diffusers = skipped (diffusers not importable)")
    print("\n" + "\n".join(lines))

if __name__ == "__main__":
    main()
