"""Image features for the distribution metrics (FID, KID, PRDC, MiFID): the extractors and their units.

A feature's raw scale is whatever the extractor happens to output (the classifier's SiLU features
have a norm of about 60), so a distance between raw features has no stated unit and a KID of 500 or
2,000 says nothing on its own. By default (`standardise = true`, for the `classifier` and `raw`
features) every feature is z-scored with the mean and standard deviation of the evaluation's
reference split (held-out by default), computed once per evaluation with the same extractor: one
unit is then one reference standard deviation per feature, the same map for every arm, sampler,
ladder rung and the floor of a report. A feature that is constant on the reference (sd ~ 0, e.g.
an always-black corner pixel) keeps sd 1. Inception features stay raw, as published FIDs use them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ablate import AblateError, Data, EvalContext, KeySpec, Metric
from ablate.datatypes import REFERENCE, as_saved

INCEPTION_ENV = "ABLATE_INCEPTION_WEIGHTS"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth"
Features = Literal["classifier", "inception", "raw"]
MIN_SD = 1e-6  # a feature whose sd on the reference is below this is constant there: it keeps sd 1
Z_UNIT = "standardised features (per-feature z-scores of the reference split, unless standardise = false or inception)"
ACC = KeySpec(description="held-out accuracy of the feature classifier", unit="share of held-out images classified right")


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


class Standardised(nn.Module):
    """An extractor whose features are z-scored with a reference set's per-feature mean and sd."""

    def __init__(self, inner: nn.Module, mean: Tensor, sd: Tensor) -> None:
        super().__init__()
        self.inner, self.num_features = inner, inner.num_features
        self.register_buffer("mean", mean.float())
        self.register_buffer("sd", sd.float())

    def forward(self, x: Tensor) -> Tensor:
        return (self.inner(x).float() - self.mean) / self.sd


@torch.no_grad()
def embed(feature: nn.Module, prepare: Callable[[Tensor], Tensor], x: Tensor, batch: int = 500) -> Tensor:
    """Features of x [N, ...] as float64 [N, d], in batches."""
    return torch.cat([feature(prepare(chunk)).double() for chunk in x.cpu().split(batch)])


def standardise(feature: nn.Module, prepare: Callable[[Tensor], Tensor], reference: Tensor) -> Standardised:
    """`feature` z-scored with the per-feature mean and (n - 1) sd of its features of `reference`."""
    f = embed(feature, prepare, reference)
    sd = f.std(0)
    return Standardised(feature, f.mean(0), torch.where(sd < MIN_SD, torch.ones_like(sd), sd))


def reference_split(ctx: EvalContext) -> Tensor:
    """The evaluation's reference split as saved: set by the core, else (a metric called directly) the held-out split."""
    ref = ctx.extra.get(REFERENCE)
    if ref is not None:
        return ref
    return as_saved(ctx.data.test, ctx.data.spec)


class FeatureMetric(Metric):
    """Shared setup of the feature metrics: the extractor, its standardisation and the batched updates.

    Samples and real images arrive scored as saved (clamped and 8-bit quantised for images) and
    are compared with the evaluation's reference split (held-out by default), or with the training
    split for a metric with `compares_with = "train"`; the standardisation is always the reference split's."""

    class Params(Metric.Params):
        features: Features = Field("classifier", description="'classifier' (trained on the dataset), 'inception' (InceptionV3 weights) or 'raw'")
        standardise: bool = Field(True, description="z-score each classifier/raw feature with the reference split's mean and sd "
                                  "(units: reference standard deviations); false: raw feature units")
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
        if self.params.features == "inception":
            if not ctx.data.spec.is_image:
                raise AblateError("features = 'inception' needs image data", key="metric.features")
            return Extractor(2048, _to_uint8_rgb, inception=True)
        extra: dict[str, float] = {}
        if self.params.features == "classifier":
            module, acc = trained_classifier(ctx.data, ctx.cache_dir)
            extra["classifier_test_acc"] = acc
        else:
            module = Flatten(math.prod(ctx.data.spec.shape))
        if self.params.standardise:
            module = standardise(module, _as_float, reference_split(ctx))
        return Extractor(module, _as_float, extra=extra)

    def _module(self, extractor: Extractor) -> nn.Module:
        """The extractor as a module (for metrics that take features, not a torchmetrics `feature`)."""
        if isinstance(extractor.feature, nn.Module):
            return extractor.feature
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(extractor.feature)], **self._inception_kwargs())

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
