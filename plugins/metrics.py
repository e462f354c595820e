"""Metrics: FID and KID (torchmetrics), memorisation, spread and the x0 error by timestep (point-data
metrics: point_metrics.py)."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ablate import AblateError, Data, EvalContext, KeySpec, Metric, hookimpl

INCEPTION_ENV = "ABLATE_INCEPTION_WEIGHTS"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth"
Features = Literal["classifier", "inception", "raw"]


class Classifier(nn.Module):
    """A small classifier whose penultimate layer gives the features of the 'classifier' FID."""

    num_features = 128

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(shape) == 3:
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(shape[0], 32, 3, padding=1), nn.SiLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, self.num_features), nn.SiLU(),
            )
        else:
            self.body = nn.Sequential(nn.Linear(shape[0], 64), nn.SiLU(), nn.Linear(64, self.num_features), nn.SiLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # features: what torchmetrics calls on every image

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _fingerprint(data: Data) -> str:
    h = hashlib.sha256(f"{data.spec.name}{tuple(data.train.shape)}".encode())
    h.update(data.train[:256].contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def trained_classifier(data: Data, cache_dir: Path, epochs: int = 30) -> tuple[Classifier, float]:
    """Train once per dataset on its train split (cached), return it with its test accuracy."""
    if data.train_labels is None or data.spec.num_classes is None:
        raise AblateError(f"features = 'classifier' needs a labelled dataset; {data.spec.name!r} has no labels (use 'inception')", key="metric.features")
    model = Classifier(data.spec.shape, data.spec.num_classes)
    path = cache_dir / f"classifier-{data.spec.name}-{_fingerprint(data)}.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        return model.eval(), float(state["test_acc"])
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Classifier(data.spec.shape, data.spec.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = data.train, data.train_labels
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(128):
            xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=gen)  # robust to sampler noise
            loss = F.cross_entropy(model.logits(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model.logits(data.test).argmax(1) == data.test_labels).float().mean().item()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # workers of one study may train it at once: each its own file
    torch.save({"model": model.state_dict(), "test_acc": acc}, tmp)
    os.replace(tmp, path)
    return model, acc


class Flatten(nn.Module):
    """Raw-pixel (or raw-coordinate) features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).float()


def _to_uint8_rgb(x: Tensor) -> Tensor:
    """InceptionV3's input: 8-bit RGB (the samples are already quantised, so this loses nothing)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _as_float(x: Tensor) -> Tensor:
    return x.float()


@dataclass(frozen=True)
class Extractor:
    """A feature path: what torchmetrics gets as `feature`, and how a [-1, 1] batch becomes its input."""

    feature: nn.Module | int
    prepare: Callable[[Tensor], Tensor]
    inception: bool = False
    extra: dict[str, float] = field(default_factory=dict)


class _FeatureMetric(Metric):
    """Shared setup of FID and KID: the feature extractor and the batched updates.

    Samples and real images arrive scored as saved (clamped and 8-bit quantised for images) and
    are compared with the evaluation's reference split (held-out by default)."""

    class Params(Metric.Params):
        features: Features = Field("classifier", description="'classifier' (trained on the dataset), 'inception' (InceptionV3 weights) or 'raw'")
        inception_weights: str | None = Field(None, description=f"local InceptionV3 weights file for features='inception' (or ${INCEPTION_ENV})")

    def _inception_kwargs(self) -> dict:
        path = self.params.inception_weights or os.environ.get(INCEPTION_ENV)
        if path and not Path(path).expanduser().is_file():
            raise AblateError(f"Inception weights file not found: {path}", key="metric.inception_weights")
        return {"feature_extractor_weights_path": str(Path(path).expanduser())} if path else {}

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        """The torchmetrics object for this extractor and sample count."""
        raise NotImplementedError

    def _extractor(self, ctx: EvalContext) -> Extractor:
        if self.params.features == "classifier":
            model, acc = trained_classifier(ctx.data, ctx.cache_dir)
            return Extractor(model, _as_float, extra={"classifier_test_acc": acc})
        if self.params.features == "raw":
            return Extractor(Flatten(math.prod(ctx.data.spec.shape)), _as_float)
        if not ctx.data.spec.is_image:
            raise AblateError("features = 'inception' needs image data", key="metric.features")
        return Extractor(2048, _to_uint8_rgb, inception=True)

    def _score(self, metric, extractor: Extractor, samples: Tensor, real: Tensor, batch: int = 500) -> None:
        for imgs, is_real in ((real, True), (samples, False)):
            for chunk in imgs.cpu().split(batch):
                metric.update(extractor.prepare(chunk), real=is_real)

    def _build(self, ctx: EvalContext, n: int):
        extractor = self._extractor(ctx)
        try:
            return self._metric(extractor, n, ctx), extractor
        except (OSError, RuntimeError, ValueError) as exc:
            if not extractor.inception:
                raise
            raise AblateError(
                f"could not load the InceptionV3 weights ({type(exc).__name__}: {exc}). Offline, download {INCEPTION_URL} "
                f"elsewhere and set inception_weights = 'PATH' in the [[metric]] table or ${INCEPTION_ENV}=PATH",
                key="metric.inception_weights",
            ) from None


class FID(_FeatureMetric):
    """Frechet distance between feature statistics of samples and real data (torchmetrics).

    Depends on the sample count and the features: classifier/raw FIDs are not comparable with
    published Inception FIDs."""

    name = "fid"
    keys = {"fid": KeySpec("lower", "headline", nonnegative=True, description="Frechet distance of feature statistics"),
            "classifier_test_acc": KeySpec(description="held-out accuracy of the feature classifier")}

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.fid import FrechetInceptionDistance

        kwargs = self._inception_kwargs() if extractor.inception else {}
        return FrechetInceptionDistance(feature=extractor.feature, **kwargs)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        metric, extractor = self._build(ctx, samples.shape[0])
        self._score(metric, extractor, samples, real)
        return {"fid": float(metric.compute()), **extractor.extra}


class KID(_FeatureMetric):
    """Kernel (polynomial MMD) distance between feature sets: unbiased, so usable at small sample counts."""

    name = "kid"
    keys = {"kid": KeySpec("lower", "headline", nonnegative=True, description="kernel distance (unbiased MMD^2)"),
            "kid_std": KeySpec(description="spread of KID over its subsets"),
            "classifier_test_acc": KeySpec(description="held-out accuracy of the feature classifier")}

    class Params(_FeatureMetric.Params):
        subset_size: int = Field(500, ge=2, description="subset size of the KID estimate (capped at the sample count)")
        subsets: int = Field(50, ge=1, description="number of subsets averaged")

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.kid import KernelInceptionDistance

        kwargs = self._inception_kwargs() if extractor.inception else {}
        size = min(self.params.subset_size, n)
        with warnings.catch_warnings():  # torchmetrics warns that KID keeps every feature: it must, at these sizes
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            return KernelInceptionDistance(feature=extractor.feature, subsets=self.params.subsets, subset_size=size, **kwargs)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        with torch.random.fork_rng():
            torch.manual_seed(0)  # KID draws its subsets with the global RNG
            metric, extractor = self._build(ctx, min(samples.shape[0], real.shape[0]))
            self._score(metric, extractor, samples, real)
            mean, std = metric.compute()
        return {"kid": float(mean), "kid_std": float(std), **extractor.extra}


class NearestNeighbour(Metric):
    """Distance from each sample to its nearest training image: a model that copies its training set
    scores far below held-out real images (the real-data row of this metric)."""

    name = "nearest_neighbour"
    compares_with = "train"
    keys = {"nn_distance": KeySpec(description="mean RMS distance (per value) to the nearest training image"),
            "close_copies": KeySpec("lower", "diagnostic", nonnegative=True,
                                    description="share of samples nearer a training image than 99% of held-out images are")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        train = real.flatten(1).double()  # compares_with = "train": `real` is the training split as saved
        dist = _nearest(samples.flatten(1).double(), train)
        held_out = _nearest(ctx.data.test.flatten(1).double(), train)
        threshold = torch.quantile(held_out, 0.01)
        return {"nn_distance": float(dist.mean()), "close_copies": float((dist < threshold).double().mean())}


def _nearest(x: Tensor, ref: Tensor, chunk: int = 1024) -> Tensor:
    """RMS (per value) distance of each row of x to its nearest row of ref."""
    exact = "donot_use_mm_for_euclid_dist"  # a copy must come out at distance 0, not at rounding noise
    return torch.cat([torch.cdist(part, ref, compute_mode=exact).min(1).values for part in x.split(chunk)]) / math.sqrt(x.shape[1])


class Spread(Metric):
    """How far samples spread around their mean, against the reference data's spread: a sampler
    that regresses to the mean (one jump from x_T returns E[x0 | x_T], the data mean) scores near 0."""

    name = "spread"
    keys = {"spread_ratio": KeySpec(description="RMS distance of the samples from their mean / the same for the reference (1: as spread as the data)")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None

        def rms(x: Tensor) -> float:
            x = x.flatten(1).double()
            return float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())

        return {"spread_ratio": rms(samples) / rms(real)}


class X0ErrorByT(Metric):
    """Mean squared error of the model's x0 estimate on held-out data at several t: where a target fails."""

    name = "x0_error_by_t"
    needs_samples = False
    cheap = True
    keys = {"t=*": KeySpec("lower", "curve", nonnegative=True, description="E||x0_hat - x0||^2 per value at timestep t"),
            "mean": KeySpec("lower", "diagnostic", nonnegative=True, description="mean x0 error over timesteps")}

    class Params(Metric.Params):
        num_samples: int = Field(512, ge=2, description="held-out points used at each t")
        timesteps: list[int] | None = Field(None, description="timestep indices (default: 12 spread over 0..T-1)")

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        T = ctx.diffusion.T
        ts = self.params.timesteps or sorted({round(T ** (i / 11)) - 1 for i in range(12)} | {T // 2, T - 1})
        x0 = ctx.data.test[: self.params.num_samples].to(ctx.device)
        out = {}
        for t in ts:
            if not 0 <= t < T:
                raise AblateError(f"timestep {t} is outside 0..{T - 1}", key="metric.timesteps")
            tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
            eps = torch.randn(x0.shape, generator=ctx.generator, device=ctx.generator.device).to(x0.device)
            pred = ctx.denoiser(ctx.diffusion.q_sample(x0, tt, eps), tt)
            out[f"t={t}"] = float((pred.x0.float() - x0).pow(2).mean())
        out["mean"] = sum(out.values()) / len(out)
        return out


@hookimpl
def ablate_metrics() -> list[type]:
    return [FID, KID, NearestNeighbour, Spread, X0ErrorByT]
