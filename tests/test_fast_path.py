"""The fast path (`train.compile = true`, ablate.fast) computes what eager PyTorch computes.

On CPU torch.compile fuses kernels (no CUDA graphs): denoiser predictions, whole ancestral sampling
runs and training gradients must equal eager within float32 rounding. On CUDA, mode
"reduce-overhead" (CUDA graphs) under bf16 autocast must equal eager bf16 within bf16 tolerance.
"""

from __future__ import annotations

import pytest
import torch

from ablate import DataSpec, NetworkDenoiser
from ablate.fast import compiled, fast_denoiser


def parts(registry, model: str, params: dict, shape: tuple[int, ...], device: str = "cpu"):
    torch.manual_seed(0)
    net = registry.create("model", model, params).build(DataSpec(name="test", shape=shape)).to(device).eval()
    target = registry.create("target", "epsilon", {})
    diffusion = registry.create("schedule", "linear", {"T": 50}).diffusion()
    return net, target, diffusion


def test_compiled_denoiser_and_sampler_equal_eager_on_cpu(registry):
    net, target, diffusion = parts(registry, "mlp", {"hidden": 32, "depth": 2}, (2,))
    eager = NetworkDenoiser(net, target, diffusion)
    fast = fast_denoiser(NetworkDenoiser(net, target, diffusion), {"compile": True}, torch.device("cpu"))
    assert fast.module is not net  # compiled
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    t = torch.randint(50, (256,), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = eager(x, t), fast(x, t)
    torch.testing.assert_close(b.eps, a.eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.x0, a.x0, rtol=1e-5, atol=1e-4)
    sampler = registry.create("sampler", "ancestral", {})
    with torch.inference_mode():
        runs = [sampler.sample(d, diffusion, x.clone(), 49, torch.Generator().manual_seed(3)) for d in (eager, fast)]
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-4)


def test_compiled_training_gradients_equal_eager_on_cpu(registry):
    net, _, _ = parts(registry, "mlp", {"hidden": 32, "depth": 2}, (2,))
    net.train()
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(1))
    t = torch.randint(50, (128,), generator=torch.Generator().manual_seed(2))
    grads = []
    for forward in (net, compiled(net, torch.device("cpu"))):
        net.zero_grad()
        forward(x, t).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for g_fast, g_eager in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_fast, g_eager, rtol=1e-5, atol=1e-6)


def test_only_network_denoisers_of_compiled_cells_change(registry):
    net, target, diffusion = parts(registry, "mlp", {"hidden": 8, "depth": 1}, (2,))
    plain = NetworkDenoiser(net, target, diffusion)
    assert fast_denoiser(plain, {"compile": False}, torch.device("cpu")).module is net
    other = object()
    assert fast_denoiser(other, {"compile": True}, torch.device("cpu")) is other


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_sampling_equals_eager_within_bf16(registry):
    net, target, diffusion = parts(registry, "unet", {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                                      "attn_resolutions": [8], "dropout": 0.0}, (1, 16, 16), "cuda")
    eager = NetworkDenoiser(net, target, diffusion, autocast=True)
    fast = fast_denoiser(NetworkDenoiser(net, target, diffusion, autocast=True), {"compile": True}, torch.device("cuda"))
    x = torch.randn(64, 1, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    sampler = registry.create("sampler", "ancestral", {})
    with torch.inference_mode():
        runs = [sampler.sample(d, diffusion, x.clone(), 49, torch.Generator("cuda").manual_seed(3)) for d in (eager, fast)]
    torch.testing.assert_close(runs[1], runs[0], rtol=2e-2, atol=2e-2)
