"""Image metrics: FID and KID (torchmetrics) on standardised features, and memorisation (the distance of
each sample to its nearest training image). The feature extractors live in ablate_plugins.features;
ablate_plugins.metrics registers these metrics with the others."""

from __future__ import annotations

import warnings

import torch
from ablate_plugins.features import ACC, Z_UNIT, Extractor, FeatureMetric
from pydantic import Field
from torch import Tensor

from ablate import EvalContext, KeySpec, Metric
from ablate.halves import nearest


class FID(FeatureMetric):
    """Frechet distance between feature statistics of samples and real data (torchmetrics).

    Depends on the sample count and the features: classifier/raw FIDs are not comparable with
    published Inception FIDs."""

    name = "fid"
    keys = {"fid": KeySpec("lower", "headline", nonnegative=True, description="Frechet distance of feature statistics",
                           unit=f"squared Frechet distance of {Z_UNIT}"),
            "classifier_test_acc": ACC}

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.fid import FrechetInceptionDistance

        kwargs = self._inception_kwargs() if extractor.inception else {}
        return FrechetInceptionDistance(feature=extractor.feature, **kwargs)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        metric, extractor = self._build(ctx, samples.shape[0])
        self._score(metric, extractor, samples, real)
        return {"fid": float(metric.compute()), **extractor.extra}


class KID(FeatureMetric):
    """Kernel (polynomial MMD) distance between feature sets: unbiased, so usable at small sample counts."""

    name = "kid"
    keys = {"kid": KeySpec("lower", "headline", nonnegative=True, description="kernel distance (unbiased MMD^2)",
                           unit=f"squared MMD of {Z_UNIT}, polynomial kernel (x.y/d + 1)^3"),
            "kid_std": KeySpec(description="spread of KID over its subsets", unit="as kid"),
            "classifier_test_acc": ACC}

    class Params(FeatureMetric.Params):
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
    keys = {"nn_distance": KeySpec(description="mean RMS distance (per value) to the nearest training image",
                                   unit="data values on their [-1, 1] scale, RMS per value"),
            "close_copies": KeySpec("lower", "diagnostic", nonnegative=True,
                                    description="share of samples nearer a training image than 99% of held-out images are",
                                    unit="share of samples")}

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        train = real.flatten(1).double()  # compares_with = "train": `real` is the training split as saved
        dist = nearest(samples, train)
        held_out = nearest(ctx.data.test, train)
        threshold = torch.quantile(held_out, 0.01)
        return {"nn_distance": float(dist.mean()), "close_copies": float((dist < threshold).double().mean())}
