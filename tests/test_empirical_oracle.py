"""empirical_oracle: the exact posterior-mean denoiser of the training set, against closed forms computed
here in numpy (one training point: the posterior mean is that point; two: the two-term softmax)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ablate import AblateError, Data, DataSpec
from ablate.interfaces import Dataset


class Points(Dataset):
    """A dataset of the given training points (a test helper: `splits()` hands them to models)."""

    name = "points"

    def __init__(self, train: torch.Tensor) -> None:
        super().__init__()
        self.train = train

    def load(self) -> Data:
        return Data(self.train, self.train[:1], DataSpec(self.name, tuple(self.train.shape[1:])))


def denoiser(registry, train: torch.Tensor, T: int = 50):
    diffusion = registry.create("schedule", "linear", {"T": T}).diffusion()
    spec = Points(train).splits().spec
    oracle = registry.create("model", "empirical_oracle")
    module = oracle.build(spec)
    return oracle.denoiser(module, registry.create("target", "epsilon"), diffusion, spec), diffusion


def two_point_mean(x_t: np.ndarray, abar: float, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """E[x0 | x_t] for x0 uniform on {p, q}: w_p = 1 / (1 + exp(l_q - l_p)), l = -|x_t - sqrt(abar) x|^2 / (2 (1 - abar))."""
    lp, lq = (-np.sum((x_t - np.sqrt(abar) * x) ** 2) / (2 * (1 - abar)) for x in (p, q))
    w = np.exp(-np.logaddexp(0.0, lq - lp))  # 1 / (1 + exp(lq - lp)) without overflow
    return w * p + (1 - w) * q


def test_one_training_point_is_the_posterior_mean_at_every_t(registry):
    point = torch.tensor([[0.3, -0.7, 0.1]])
    den, diffusion = denoiser(registry, point)
    x_t = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 5
    t = torch.tensor([0, 1, 10, 25, 48, 49])
    pred = den(x_t, t)
    assert torch.allclose(pred.x0, point.expand(6, 3), atol=1e-7)
    assert torch.allclose(pred.eps, diffusion.eps_from_x0(x_t, t, pred.x0))


def test_two_training_points_match_the_two_term_formula(registry):
    p, q = np.array([0.5, -0.25, 0.75, 0.0]), np.array([-0.5, 0.25, 0.5, -1.0])
    den, diffusion = denoiser(registry, torch.tensor(np.stack([p, q]), dtype=torch.float32))
    p32, q32 = (torch.tensor(v, dtype=torch.float32).double().numpy() for v in (p, q))  # the points as stored
    rng = np.random.default_rng(1)
    ts = [0, 3, 10, 20, 30, 40, 49]
    x_t = np.stack([np.sqrt(float(diffusion.alpha_bars[t])) * (p if i % 2 else q) + rng.normal(size=4) * 0.8
                    for i, t in enumerate(ts)])
    got = den(torch.tensor(x_t), torch.tensor(ts)).x0.numpy()  # float64 in, float64 out
    want = np.stack([two_point_mean(x, float(diffusion.alpha_bars[t]), p32, q32) for x, t in zip(x_t, ts, strict=True)])
    assert np.allclose(got, want, rtol=1e-9, atol=1e-12)
    weights = [(w - q32[0]) / (p32[0] - q32[0]) for w in want[:, 0]]
    assert any(0.01 < w < 0.99 for w in weights)  # some t weigh both points: the test is not all one-hot


def test_small_t_is_stable_far_from_the_data(registry):
    """At t = 0 the logits reach ~1e6: computed from the max logit, the mean is the nearest point, not NaN."""
    train = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    den, _ = denoiser(registry, train)
    pred = den(torch.tensor([[30.0, 29.0], [-0.9, -1.2]]), torch.tensor([0, 0]))
    assert torch.isfinite(pred.x0).all() and torch.isfinite(pred.eps).all()
    assert torch.equal(pred.x0, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))


def test_digits_batch_matches_a_row_by_row_logsumexp(registry):
    """1,438 x 64: the batched matrix-product form equals the plain per-row formula in float64."""
    data = registry.create("dataset", "digits").splits()
    den, diffusion = denoiser(registry, data.train, T=1000)
    gen = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 5, 100, 400, 999])
    x_t = diffusion.q_sample(data.test[:5].double(), t, torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64))
    got = den(x_t, t).x0.flatten(1)
    X = data.train.flatten(1).double()
    for i in range(5):
        abar = diffusion.alpha_bars[t[i]]
        logits = -(x_t[i].flatten() - abar.sqrt() * X).pow(2).sum(1) / (2 * (1 - abar))
        want = torch.exp(logits - torch.logsumexp(logits, 0)) @ X
        assert torch.allclose(got[i], want, atol=1e-9), int(t[i])


def test_needs_the_training_split(registry):
    spec = registry.create("dataset", "digits").load().spec  # a bare load(): no train_split
    with pytest.raises(AblateError, match="train_split"):
        registry.create("model", "empirical_oracle").build(spec)
    assert isinstance(registry.create("model", "empirical_oracle").build(Points(torch.zeros(2, 2)).splits().spec), nn.Module)
