"""Fidelity and diversity apart, and memorisation in the FID: PRDC and MiFID on the standardised features.

FID and KID fold two failures into one number: samples that look wrong (fidelity) and samples that
miss part of the data (diversity). Precision and density measure the first, recall and coverage the
second. MiFID divides the FID by a memorisation distance, so a model that returns its training
images is punished instead of rewarded.
"""

from __future__ import annotations

import contextlib
import io

from ablate_plugins.features import ACC, Z_UNIT, Extractor, FeatureMetric, embed
from pydantic import Field
from torch import Tensor, nn

from ablate import AblateError, EvalContext, KeySpec

SHARE = "share of {} (0 to 1)"


class PRDC(FeatureMetric):
    """Precision, recall (Kynkaenniemi et al. 2019), density and coverage (Naeem et al. 2020) between
    the samples' and the reference split's features, by k-nearest-neighbour balls (k = nearest_k).

    Computed by `compute_prdc` of the `prdc` package (the authors' code, clovaai/generative-evaluation-prdc;
    its progress line on stdout is silenced) on the same features as FID and KID, standardised by default.
    precision: share of samples inside some reference image's k-NN ball; recall: share of reference images
    inside some sample's k-NN ball; density: how many reference balls hold a sample, over k, on average (1
    for samples distributed like the reference, above 1 where samples crowd dense regions); coverage: share
    of reference images whose ball holds a sample. Samples from half of the modes: precision ~1, recall and
    coverage ~0.5."""

    name = "prdc"
    keys = {
        "precision": KeySpec("higher", "diagnostic", nonnegative=True, description="share of samples within the k-NN "
                             "ball of a reference image (fidelity)", unit=SHARE.format("samples")),
        "recall": KeySpec("higher", "diagnostic", nonnegative=True, description="share of reference images within the "
                          "k-NN ball of a sample (diversity)", unit=SHARE.format("reference images")),
        "density": KeySpec("none", "diagnostic", nonnegative=True, description="reference k-NN balls holding a sample, "
                           "over k, on average (1: as the reference; fidelity)", unit="reference balls per sample, over k"),
        "coverage": KeySpec("higher", "diagnostic", nonnegative=True, description="share of reference images whose k-NN "
                            "ball holds a sample (diversity)", unit=SHARE.format("reference images")),
        "classifier_test_acc": ACC,
    }

    class Params(FeatureMetric.Params):
        nearest_k: int = Field(5, ge=1, description="k of the k-nearest-neighbour balls")

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext) -> nn.Module:
        return self._module(extractor)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        from prdc import compute_prdc

        assert samples is not None
        k = self.params.nearest_k
        if k >= min(samples.shape[0], real.shape[0]):
            raise AblateError(f"nearest_k = {k} needs more than {k} samples and reference images; got "
                              f"{samples.shape[0]} and {real.shape[0]}", key="metric.nearest_k")
        module, extractor = self._build(ctx, samples.shape[0])
        fake, ref = (embed(module, extractor.prepare, x).numpy() for x in (samples, real))
        with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the two counts
            out = compute_prdc(real_features=ref, fake_features=fake, nearest_k=k)
        return {**{key: float(out[key]) for key in ("precision", "recall", "density", "coverage")}, **extractor.extra}


class MiFID(FeatureMetric):
    """Memorisation-informed FID (torchmetrics' MemorizationInformedFrechetInceptionDistance, Kaggle's
    "I'm Something of a Painter Myself" metric) on the same features as FID, standardised by default.

    Its real set is the TRAINING split (`compares_with = "train"`): MiFID = FID(samples, training images) / d,
    where d is the mean over samples of 1 - |cosine| to the nearest training image's features, when d is below
    cosine_distance_eps; otherwise d = 1 and MiFID is that FID (Bai et al. 2021, as Kaggle computes it).
    Copies of training images have d = 0, so their MiFID is enormous (FID / 1e-14). Its floor row scores
    held-out images against the training split.

    cosine_distance_eps defaults to 0.01, not Kaggle's 0.1 (tuned for 2048 Inception features): on the 128
    standardised classifier features of digits, held-out images lie at d = 0.037 from the training set,
    noisy copies (sd 0.1) at 0.005 and exact copies at 0, so 0.1 would divide the FID of real held-out
    images too. Set it to 0.1 with features = "inception" to match the published metric."""

    name = "mifid"
    compares_with = "train"
    keys = {"mifid": KeySpec("lower", "diagnostic", nonnegative=True, description="FID against the training split, "
                             "divided by the memorisation distance when that is below cosine_distance_eps",
                             unit=f"squared Frechet distance of {Z_UNIT}, over a cosine distance"),
            "classifier_test_acc": ACC}

    class Params(FeatureMetric.Params):
        cosine_distance_eps: float = Field(0.01, gt=0, le=1, description="memorisation threshold on the mean cosine "
                                           "distance to the nearest training image (0.1 for Inception features)")

    def _metric(self, extractor: Extractor, n: int, ctx: EvalContext):
        from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

        return MemorizationInformedFrechetInceptionDistance(feature=self._module(extractor),
                                                            cosine_distance_eps=self.params.cosine_distance_eps)

    def evaluate(self, samples: Tensor | None, real: Tensor, ctx: EvalContext) -> dict[str, float]:
        assert samples is not None
        metric, extractor = self._build(ctx, samples.shape[0])
        # torchmetrics averages the memorisation distance over its *real* set (torchmetrics 1.9: features1 = real);
        # the definition averages it over the generated images. The FID term is symmetric, so the samples go in
        # as its real set and the training images as its fake set.
        self._score(metric, extractor, samples=real, real=samples)
        return {"mifid": float(metric.compute()), **extractor.extra}
