"""Training data for the probes: uint8 image tensors, (possibly noisy) labels, group ids.

Order of operations, as in the original: label noise is drawn over the *whole* training set
(each example flagged with probability ``random_perc``, flagged examples get a label drawn
uniformly from the 10 classes, possibly their true one), then a random ``train_perc`` subset is
kept. The flag is the example's group id (1 = "random label").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from forgetting_common.data import DatasetError, load_cifar, load_mnist, resolve_root
from forgetting_common.errors import UserError
from forgetting_common.seeding import make_generator, make_numpy_rng

from targeted_forgetting.models import INPUT_SHAPES

DEFAULT_ROOT = "./datasets"  # the original's data folder, relative to the working directory
FULL_SIZES = {"mnist": 60000, "cifar10": 50000}
SYNTHETIC_SIZES = {"mnist": 6000, "cifar10": 5000}
NUM_CLASSES = 10


@dataclass
class TrainData:
    """The training split on one device: uint8 images ``[N, C, H, W]``, labels, group ids, and
    ``ids``, each example's index in the full dataset (CPU; for the per-example trackers)."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    true_labels: torch.Tensor
    source: str
    ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> TrainData:
        return TrainData(self.images.to(device), self.labels.to(device), self.groups.to(device),
                         self.true_labels.to(device), self.source, self.ids)


def synthetic_images(train_data: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` learnable fake images of the dataset's shape: class prototype + Gaussian noise, uint8."""
    shape = INPUT_SHAPES[train_data]
    gen = torch.Generator().manual_seed(10_007 + seed)
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=gen)]
    prototypes = torch.rand((NUM_CLASSES, *shape), generator=gen) * 255.0
    noise = torch.randn((n, *shape), generator=gen) * 60.0
    images = (prototypes[labels] * 0.6 + 50.0 + noise).clamp_(0, 255).to(torch.uint8)
    return images, labels.to(torch.int64)


def load_real(train_data: str, data_dir: str | None, download: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The real training split from the data root (torchvision's MNIST layout, CIFAR pickles or JPEG)."""
    root = resolve_root(data_dir, DEFAULT_ROOT)
    if train_data == "mnist":
        try:
            images, labels = load_mnist(root, train=True, download=False, flag="--data_dir")
        except DatasetError:
            if not download or _present(root, "MNIST/raw"):
                raise  # a broken file is reported as what it is, not "download failed"
            images, labels = _download_mnist(root)
        return images.unsqueeze(1), labels, f"MNIST ({root})"
    if train_data == "cifar10":
        try:
            images, labels, _ = load_cifar(root, "cifar10", train=True, flag="--data_dir")
        except DatasetError:
            if not download or _present(root, "cifar-10-batches-py") or _present(root, "cifar10-jpeg"):
                raise
            images, labels = _download_cifar(root)
        layout = "JPEG CIFAR-10" if not (Path(root) / "cifar-10-batches-py").is_dir() else "CIFAR-10"
        return images, labels, f"{layout} ({root})"
    raise UserError(f"--train_data {train_data!r} is unknown; use mnist or cifar10")


def _present(root: Path, folder: str) -> bool:
    """Whether ``root/folder`` holds anything: then a load error is about the data, not its absence."""
    path = Path(root) / folder
    return path.is_dir() and any(path.iterdir())


def _reason(err: Exception) -> str:
    """A short cause for a failed download (the not-found message itself is not repeated)."""
    if isinstance(err, DatasetError):
        return " (no network?)"
    return f" ({type(err).__name__}: {' '.join(str(err).split())[:200]})"


def _download_mnist(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return load_mnist(root, train=True, download=True, flag="--data_dir")
    except Exception as err:  # network errors come in many types
        raise DatasetError(
            f"MNIST is not under {root}/MNIST/raw (torchvision's raw IDX layout) and downloading it failed"
            f"{_reason(err)}; point --data_dir or FORGETTING_DATA at a folder holding MNIST/raw"
        ) from err


def _download_cifar(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
        images, labels, _ = load_cifar(root, "cifar10", train=True, layout="pickle", flag="--data_dir")
        return images, labels
    except Exception as err:
        raise DatasetError(
            f"CIFAR-10 is not under {root} and downloading it failed{_reason(err)}; "
            "point --data_dir / FORGETTING_DATA at a folder holding cifar-10-batches-py or cifar10-jpeg/cifar10-jpeg.zip"
        ) from err


def add_label_noise(
    labels: torch.Tensor, random_perc: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flag each example with probability ``random_perc``; give flagged ones a uniform random label."""
    n = int(labels.shape[0])
    flags = rng.random(n) < random_perc
    noisy = labels.clone()
    count = int(flags.sum())
    if random_perc > 0 and count:
        noisy[torch.from_numpy(flags)] = torch.from_numpy(rng.integers(0, NUM_CLASSES, count)).to(labels.dtype)
    return noisy, torch.from_numpy(flags.astype(np.int64))


def subset_size(n: int, train_perc: float) -> int:
    """``int(n * train_perc)``, as the original's random split."""
    return int(n * train_perc)


def load_train_data(
    *,
    train_data: str,
    data_source: str,
    data_dir: str | None,
    train_limit: int | None,
    train_perc: float,
    random_perc: float,
    seed: int,
    download: bool = True,
) -> TrainData:
    """Load (or synthesise) the training set, add label noise, keep a random subset."""
    if data_source == "synthetic":
        n = train_limit or SYNTHETIC_SIZES[train_data]
        images, labels = synthetic_images(train_data, n)
        source = f"synthetic {train_data}-shaped ({n} examples)"
    else:
        images, labels, source = load_real(train_data, data_dir, download)
        if train_limit is not None:
            images, labels = images[:train_limit], labels[:train_limit]
    noisy, groups = add_label_noise(labels, random_perc, make_numpy_rng(seed, "noise"))
    keep = subset_size(len(labels), train_perc)
    order = torch.randperm(len(labels), generator=make_generator(seed, "split"))[:keep]
    return TrainData(images[order].contiguous(), noisy[order], groups[order], labels[order], source, order)
