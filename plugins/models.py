"""Models: a DDPM-style UNet for images, an MLP for 2-D points, and two exact oracles (no training): the
posterior mean of the dataset's Gaussian mixture, and that of the training set itself (a perfect memoriser)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ablate import AblateError, DataSpec, Denoiser, Diffusion, Mixture, Model, Prediction, Target, hookimpl


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return F.pad(emb, (0, dim % 2))


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.out = nn.GroupNorm(_groups(channels), channels), nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNetModule(nn.Module):
    """DDPM's UNet (Ho et al. 2020): ResBlocks, GroupNorm, sinusoidal time embedding, attention at low resolution."""

    def __init__(self, in_ch: int, size: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                 attn_resolutions: list[int], dropout: float) -> None:
        super().__init__()
        self.ch, temb = ch, ch * 4
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down, chans, cur, res = nn.ModuleList(), [ch], ch, size
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(cur, ch * mult, temb, dropout)] + ([AttnBlock(ch * mult)] if res in attn_resolutions else [])))
                cur = ch * mult
                chans.append(cur)
            if level != len(ch_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                chans.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, dropout), AttnBlock(cur), ResBlock(cur, cur, temb, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(cur + chans.pop(), ch * mult, temb, dropout)] + ([AttnBlock(ch * mult)] if res in attn_resolutions else [])))
                cur = ch * mult
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)]))
                res *= 2
        self.norm_out, self.conv_out = nn.GroupNorm(_groups(cur), cur), nn.Conv2d(cur, in_ch, 3, padding=1)

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.temb(timestep_embedding(t, self.ch))
        hs = [self.conv_in(x)]
        for layers in self.down:
            hs.append(self._run(layers, hs[-1], emb))
        h = self._run(self.mid, hs[-1], emb)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layers, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class UNet(Model):
    """DDPM UNet. Defaults are the paper's CIFAR-10 model (35.7M parameters); shrink ch for a CPU."""

    name = "unet"

    class Params(Model.Params):
        ch: int = Field(128, ge=8, description="base channel count")
        ch_mult: list[int] = Field([1, 2, 2, 2], min_length=1, description="channel multiplier per resolution level")
        num_res_blocks: int = Field(2, ge=1, description="residual blocks per level")
        attn_resolutions: list[int] = Field([16], description="feature-map sizes that get self-attention")
        dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside residual blocks")

    def build(self, spec: DataSpec) -> nn.Module:
        if not spec.is_image:
            raise AblateError(f"unet needs image data [C, H, W]; dataset {spec.name!r} has shape {spec.shape} (use mlp)", key="model.name")
        c, h, w = spec.shape
        if h % 2 ** (len(self.params.ch_mult) - 1) or h != w:
            raise AblateError(
                f"image size {h}x{w} must be square and divisible by 2^(len(ch_mult)-1) = {2 ** (len(self.params.ch_mult) - 1)}",
                key="model.ch_mult",
            )
        p = self.params
        return UNetModule(c, h, p.ch, p.ch_mult, p.num_res_blocks, p.attn_resolutions, p.dropout)


class MLPModule(nn.Module):
    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int, skip: bool = False) -> None:
        super().__init__()
        self.shape, self.temb_dim, self.skip = shape, hidden, skip
        dim = math.prod(shape)
        layers: list[nn.Module] = [nn.Linear(dim + hidden, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.net(torch.cat([x.flatten(1), timestep_embedding(t, self.temb_dim)], dim=1)).reshape(x.shape)
        return out + x if self.skip else out


class MLP(Model):
    """A time-conditioned MLP: for 2-D points, or small images flattened (a fast CPU baseline)."""

    name = "mlp"

    class Params(Model.Params):
        hidden: int = Field(128, ge=4, description="width of the hidden layers")
        depth: int = Field(3, ge=1, description="number of hidden layers")
        skip: bool = Field(False, description="add the input x_t to the output (a residual): the same for every "
                           "target, it lets a narrow MLP represent x0 ~ x_t at small t")

    def build(self, spec: DataSpec) -> nn.Module:
        return MLPModule(spec.shape, self.params.hidden, self.params.depth, self.params.skip)


class GMMDenoiser:
    """E[x0 | x_t] for a diagonal Gaussian mixture under x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, in float64.

    Given component k, x_t ~ N(a mu_k, a^2 v_k + s^2) with a = sqrt(abar), s^2 = 1 - abar, and
    E[x0 | x_t, k] = mu_k + a v_k / (a^2 v_k + s^2) (x_t - a mu_k); the responsibilities weigh them.
    With a lift P (orthonormal columns, x0 = P z0): P^T x_t = a z0 + s P^T eps carries everything x_t says
    about z0 (the rest is noise independent of it), so E[x0 | x_t] = P E[z0 | P^T x_t] exactly.
    """

    def __init__(self, mixture: Mixture, diffusion: Diffusion, lift: Tensor | None = None) -> None:
        self.mixture, self.diffusion, self.lift = mixture, diffusion, lift

    def posterior_mean(self, z_t: Tensor, t: Tensor) -> Tensor:
        """E[z0 | z_t] in the mixture's own coordinates, float64 [B, d]."""
        m = self.mixture
        x = z_t[:, None, :]  # [B, 1, d]
        abar = self.diffusion.alpha_bars[t.cpu()][:, None, None]
        a, s2 = abar.sqrt(), 1 - abar
        var_k = m.stds.pow(2)[None]  # [1, K, d]
        marg_var = a * a * var_k + s2  # [B, K, d]
        diff = x - a * m.means[None]
        log_lik = -0.5 * (diff.pow(2) / marg_var + marg_var.log() + math.log(2 * math.pi)).sum(-1)
        resp = torch.softmax(log_lik + m.weights.log()[None], dim=1)  # [B, K]
        cond_mean = m.means[None] + a * var_k / marg_var * diff  # [B, K, d]
        return (resp[..., None] * cond_mean).sum(1)

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        x = x_t.double().cpu()
        if self.lift is None:
            x0 = self.posterior_mean(x, t)
        else:
            x0 = self.posterior_mean(x @ self.lift, t) @ self.lift.T
        x0 = x0.to(x_t.dtype).to(x_t.device)
        return Prediction(x0=x0, eps=self.diffusion.eps_from_x0(x_t, t, x0))


class GMMOracle(Model):
    """The exact posterior-mean denoiser of the dataset's Gaussian mixture: no training, so a
    sampler's error is the sampler's alone."""

    name = "gmm_oracle"
    trainable = False

    def build(self, spec: DataSpec) -> nn.Module:
        if spec.mixture is None:
            raise AblateError(f"gmm_oracle needs a dataset with a known mixture (gmm2d, gmm_lifted), not {spec.name!r}", key="model.name")
        return nn.Module()

    def denoiser(self, module: nn.Module, target: Target, diffusion: Diffusion, spec: DataSpec,
                 autocast: bool = False) -> Denoiser:
        """The exact posterior mean, in float64 whatever `autocast` asks: it has no network to speed up."""
        assert spec.mixture is not None
        return GMMDenoiser(spec.mixture, diffusion, spec.lift)


class EmpiricalDenoiser:
    """E[x0 | x_t] when x0 is drawn uniformly from the n training examples x_i, in float64:
    x0_hat = sum_i softmax_i(-|x_t - a x_i|^2 / (2 s^2)) x_i with a = sqrt(abar_t), s^2 = 1 - abar_t.
    |x_t|^2 is the same for every i, so the logits are (a x_t.x_i - a^2 |x_i|^2 / 2) / s^2: one matrix product
    per batch ([B, D] x [D, n]) and a softmax over n, computed from the max logit so that small t (s^2 ~ 1e-4)
    does not overflow."""

    def __init__(self, train: Tensor, diffusion: Diffusion) -> None:
        self.train, self.diffusion = train.flatten(1).double(), diffusion  # [n, D]
        self.norms = self.train.pow(2).sum(1)  # [n]

    def posterior_mean(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[x0 | x_t], float64 [B, D], on the device of the training examples."""
        x = x_t.flatten(1).double().to(self.train.device)
        abar = self.diffusion.at(self.diffusion.alpha_bars, t, x)  # [B, 1]
        logits = (abar.sqrt() * (x @ self.train.T) - abar * self.norms[None] / 2) / (1 - abar)  # [B, n]
        return torch.softmax(logits, dim=1) @ self.train

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        device = x_t.device if x_t.device.type != "mps" else torch.device("cpu")  # MPS has no float64
        if self.train.device != device:  # moved once, on the first call
            self.train, self.norms = self.train.to(device), self.norms.to(device)
        x0 = self.posterior_mean(x_t, t).reshape(x_t.shape).to(x_t.device, x_t.dtype)
        return Prediction(x0=x0, eps=self.diffusion.eps_from_x0(x_t, t, x0))


class EmpiricalOracle(Model):
    """The exact posterior-mean denoiser of the training set itself (after `train_half`): no training, and a
    perfect memoriser, since its samples are training examples. A metric that rates it well cannot tell
    copying from generalising."""

    name = "empirical_oracle"
    trainable = False

    def build(self, spec: DataSpec) -> nn.Module:
        if spec.train_split is None:
            raise AblateError("empirical_oracle needs the training split in spec.train_split, which "
                              "Dataset.splits() sets (a bare Dataset.load() does not)", key="model.name")
        return nn.Module()

    def denoiser(self, module: nn.Module, target: Target, diffusion: Diffusion, spec: DataSpec,
                 autocast: bool = False) -> Denoiser:
        """The exact posterior mean, in float64 whatever `autocast` asks."""
        assert spec.train_split is not None
        return EmpiricalDenoiser(spec.train_split, diffusion)


@hookimpl
def ablate_models() -> list[type]:
    return [UNet, MLP, GMMOracle, EmpiricalOracle]
