"""`ablate export-model`: a trained cell as a diffusers DDPMPipeline (`DDPMPipeline.from_pretrained(DIR)`).

The pipeline holds the cell's EMA weights and a DDPMScheduler that samples as ablate's ancestral sampler
evaluates: the cell's betas (as `trained_betas`), its target as `prediction_type`, x0_hat clipped to
[-1, 1] when ablate clips it (image data by default, like `eval.clip_x0`) and the posterior variance
(`fixed_small`). Timesteps are the same integer indices 0..T-1 on both sides.

`diffusers_unet` cells export as they are; ablate's own `unet` exports when its weights map onto a
UNet2DModel (one GroupNorm group count throughout), which the exporter checks by running both networks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ablate.diffusion import Diffusion
from ablate.errors import AblateError
from ablate.plugins import load_registry
from ablate.train import load_checkpoint

PREDICTION_TYPES = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}  # ablate target -> diffusers
ONLY = "only diffusers_unet cells export (and unet cells whose weights map onto diffusers' UNet2DModel)"


def require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise AblateError("ablate export-model needs the diffusers package: pip install 'ablate[diffusers]'") from None
    return diffusers


def cell_dir(target: str | Path, runs_dir: Path) -> Path:
    """A run dir (holding config.json), given as a path or as a cell key under the runs dir."""
    for candidate in (Path(target), runs_dir / str(target)):
        if (candidate / "config.json").is_file():
            return candidate
    raise AblateError(f"{target}: not a cell's run dir (a folder holding config.json) nor a cell key under "
                      f"--runs-dir {runs_dir}")


def scheduler_config(diffusion: Diffusion, target: str, clip: bool) -> dict[str, Any]:
    """The DDPMScheduler config that reproduces ablate's ancestral sampling of a cell."""
    if target not in PREDICTION_TYPES:
        raise AblateError(f"target {target!r} has no diffusers prediction_type; exportable targets: "
                          f"{', '.join(PREDICTION_TYPES)}", key="target.name")
    return {"num_train_timesteps": diffusion.T, "trained_betas": diffusion.betas.tolist(),
            "prediction_type": PREDICTION_TYPES[target], "clip_sample": clip, "clip_sample_range": 1.0,
            "variance_type": "fixed_small", "thresholding": False}


def export_model(target: str | Path, to: str | Path, runs_dir: str | Path = "runs",
                 clip_x0: bool | None = None) -> Path:
    """Save a cell's EMA weights and its scheduler as a DDPMPipeline in `to` (a new or empty folder).

    clip_x0: clip_sample of the scheduler; None: on for image data, as ablate's evaluation default."""
    diffusers = require_diffusers()
    run_dir, to = cell_dir(target, Path(runs_dir)), Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise AblateError(f"--to {to} exists and is not an empty folder; choose a new one")
    config = json.loads((run_dir / "config.json").read_text())
    registry = load_registry()  # only the plugins the pipeline needs: the weighting's code may be gone
    model, schedule = registry.from_table("model", config["model"]), registry.from_table("schedule", config["schedule"])
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", torch.device("cpu"))
    if ckpt is None:
        raise AblateError(f"{run_dir}: no readable checkpoint.pt; train the cell first (ablate run)")
    spec = registry.from_table("dataset", config["data"]).splits().spec
    module = model.build(spec)
    module.load_state_dict(ckpt["ema"])
    unet = as_unet2d(config["model"], module.eval(), spec.shape, diffusers)
    diffusion = schedule.diffusion()
    clip = spec.is_image if clip_x0 is None else clip_x0
    scheduler = diffusers.DDPMScheduler(**scheduler_config(diffusion, config["target"]["name"], clip))
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(to)
    (to / "ablate_cell.json").write_text(json.dumps({"cell": run_dir.name, "step": int(ckpt["step"]),
                                                      "weights": "ema", "config": config}, indent=2, sort_keys=True))
    return to


def as_unet2d(model: dict[str, Any], module: nn.Module, shape: tuple[int, ...], diffusers: Any) -> nn.Module:
    """The cell's network as a UNet2DModel, or an AblateError saying only these models export."""
    if model["name"] == "diffusers_unet":
        return module.unet
    if model["name"] != "unet":
        raise AblateError(f"{ONLY}; this cell's model is {model['name']!r}", key="model.name")
    groups = {m.num_groups for m in module.modules() if isinstance(m, nn.GroupNorm)}
    if len(groups) != 1:
        raise AblateError(f"{ONLY}; this unet's GroupNorms have {sorted(groups)} groups (ablate's unet uses "
                          "gcd(32, channels)), a UNet2DModel one count throughout", key="model.ch")
    c, size, _ = shape
    levels = len(model["ch_mult"])
    attn = [size // 2**level in model["attn_resolutions"] for level in range(levels)]
    unet = diffusers.UNet2DModel(
        sample_size=size, in_channels=c, out_channels=c, block_out_channels=[model["ch"] * m for m in model["ch_mult"]],
        layers_per_block=model["num_res_blocks"], dropout=model["dropout"], norm_num_groups=groups.pop(),
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        attention_head_dim=None, flip_sin_to_cos=False, freq_shift=0)  # one head; sin before cos, as ablate's
    weights = module.state_dict()
    unet.load_state_dict(dict(_mapped(weights, levels, model["num_res_blocks"], attn)), strict=True)
    _check_same(module, unet.eval(), shape)
    return unet


def _mapped(w: dict[str, Tensor], levels: int, blocks: int, attn: list[bool]) -> Iterator[tuple[str, Tensor]]:
    """ablate unet weights under UNet2DModel's names (same layers, same order; see plugins/models.py)."""

    def same(a: str, d: str) -> Iterator[tuple[str, Tensor]]:
        yield from ((f"{d}.{p}", w[f"{a}.{p}"]) for p in ("weight", "bias") if f"{a}.{p}" in w)

    def resnet(a: str, d: str) -> Iterator[tuple[str, Tensor]]:
        for mine, theirs in (("norm1", "norm1"), ("conv1", "conv1"), ("temb", "time_emb_proj"), ("norm2", "norm2"),
                             ("conv2", "conv2"), ("skip", "conv_shortcut")):
            yield from same(f"{a}.{mine}", f"{d}.{theirs}")

    def attention(a: str, d: str) -> Iterator[tuple[str, Tensor]]:  # 1x1 convs -> linears, qkv split in three
        yield from same(f"{a}.norm", f"{d}.group_norm")
        for name, weight, bias in zip(("to_q", "to_k", "to_v"), w[f"{a}.qkv.weight"].chunk(3), w[f"{a}.qkv.bias"].chunk(3),
                                      strict=True):
            yield f"{d}.{name}.weight", weight[:, :, 0, 0]
            yield f"{d}.{name}.bias", bias
        yield f"{d}.to_out.0.weight", w[f"{a}.out.weight"][:, :, 0, 0]
        yield f"{d}.to_out.0.bias", w[f"{a}.out.bias"]

    yield from same("temb.0", "time_embedding.linear_1")
    yield from same("temb.2", "time_embedding.linear_2")
    yield from same("conv_in", "conv_in")
    i = 0
    for level in range(levels):
        for r in range(blocks):
            yield from resnet(f"down.{i}.0", f"down_blocks.{level}.resnets.{r}")
            if attn[level]:
                yield from attention(f"down.{i}.1", f"down_blocks.{level}.attentions.{r}")
            i += 1
        if level != levels - 1:
            yield from same(f"down.{i}.0", f"down_blocks.{level}.downsamplers.0.conv")
            i += 1
    yield from resnet("mid.0", "mid_block.resnets.0")
    yield from attention("mid.1", "mid_block.attentions.0")
    yield from resnet("mid.2", "mid_block.resnets.1")
    i = 0
    for u, level in enumerate(reversed(range(levels))):
        for r in range(blocks + 1):
            yield from resnet(f"up.{i}.0", f"up_blocks.{u}.resnets.{r}")
            if attn[level]:
                yield from attention(f"up.{i}.1", f"up_blocks.{u}.attentions.{r}")
            i += 1
        if level != 0:
            yield from same(f"up.{i}.1", f"up_blocks.{u}.upsamplers.0.conv")
            i += 1
    yield from same("norm_out", "conv_norm_out")
    yield from same("conv_out", "conv_out")


@torch.no_grad()
def _check_same(module: nn.Module, unet: nn.Module, shape: tuple[int, ...]) -> None:
    """The mapped UNet2DModel must compute what the cell's network computes, on a probe batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((4, *shape), generator=gen)
    t = torch.tensor([0, 10, 100, 999])
    mine, theirs = module(x, t), unet(x, t).sample
    if not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4 * float(mine.abs().max())):
        raise AblateError(f"{ONLY}; this unet's weights loaded into UNet2DModel compute something else "
                          f"(max difference {float((mine - theirs).abs().max()):.3g})", key="model")
