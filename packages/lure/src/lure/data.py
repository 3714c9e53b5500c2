"""The dataset of a run: which images, in which order, with which statistics and augmentation.

A *source* is an indexable pool of labelled images: ``fetch(indices)`` returns float images in
[0, 1] (``[B, C, H, W]``) and int64 labels on the run's device. The training pool holds the
train ids ``[0, val_offset)`` and the validation ids ``[val_offset, ...)``, exactly the original
index arithmetic (offset 45,000 for CIFAR, 80,565 for restricted ImageNet; :mod:`lure.replay`
says which ids each state uses).

Sources by role:

* :class:`TensorSource` (here): a whole dataset held as a uint8 tensor on the device: CIFAR-10/100
  (pickles or the JPEG copy), MNIST and MNIST-5k.
* :class:`lure.synthetic.SyntheticSource`: a virtual dataset of any nominal size (smoke runs).
* :class:`lure.restricted_imagenet.FolderSource`: image files decoded on access.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from forgetting_common.data import load_cifar, load_mnist, resolve_root
from forgetting_common.data.tensors import augment_batch
from forgetting_common.errors import UserError

from lure.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from lure.replay import split_sizes
from lure.restricted_imagenet import restricted_imagenet
from lure.synthetic import SyntheticSource

#: Start of the validation pool (= size of the train pool) per dataset, as in the original.
VAL_OFFSETS = {"cifar10": 45000, "cifar100": 45000, "restricted_imagenet": 80565, "mnist": 55000, "mnist5k": 3600}
FEW_SHOT_OFFSET = 6800
DATASETS = ("cifar10", "cifar100", "restricted_imagenet", "mnist", "mnist5k")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "restricted_imagenet": 14, "mnist": 10, "mnist5k": 10}


@dataclass(frozen=True)
class DataSpec:
    """The flags that decide a run's data (a slice of :class:`lure.cli.Config`, original names)."""

    dataset: str
    data_source: str
    data: str | None
    imagenet_path: str
    meta_batch_size: int
    meta_batch_number: int
    few_shot: bool
    n_shots: int
    test_limit: int | None
    image_size: int | None
    val_offset: int | None
    order_seed: int


class TensorSource:
    """A dataset as uint8 ``[N, C, H, W]`` images and int64 labels, on one device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device | str = "cpu") -> None:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.images = images.to(device)
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> TensorSource:
        """The first ``n`` images (``--test_limit``)."""
        return TensorSource(self.images[:n], self.labels[:n], self.device)

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.device)
        return self.images[idx].to(torch.float32).div_(255.0), self.labels[idx]


@dataclass
class AnytimeData:
    """Everything the training loop needs to know about a dataset."""

    pool: object  # train+val source
    test: object
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_offset: int
    crop_padding: int
    flip: bool
    description: str
    notes: list[str] = field(default_factory=list)

    def augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return augment_batch(x, crop_padding=self.crop_padding, flip=self.flip, generator=generator)


def _pool_need(spec: DataSpec, val_offset: int) -> int:
    _, mv = split_sizes(spec.meta_batch_size)
    return val_offset + spec.meta_batch_number * mv


def default_val_offset(spec: DataSpec) -> int:
    if spec.val_offset is not None:
        return spec.val_offset
    if spec.dataset == "restricted_imagenet" and spec.few_shot:
        return FEW_SHOT_OFFSET
    return VAL_OFFSETS[spec.dataset]


def check_sizes(spec: DataSpec, val_offset: int, pool_size: int) -> None:
    """Fail early where the original would silently overlap chunks with the validation pool."""
    mt, mv = split_sizes(spec.meta_batch_size)
    K, M = spec.meta_batch_number, spec.meta_batch_size
    if mt < 1 or mv < 1:
        raise UserError(f"--meta_batch_size {M} is too small: it must give at least one training and one "
                        f"validation example (90%/10% split)")
    if K * mt > val_offset:
        raise UserError(
            f"--meta_batch_size {M} x --meta_batch_number {K} needs {K * mt} training examples but the "
            f"{spec.dataset} training pool holds {val_offset} (ids below the validation pool at {val_offset})")
    if val_offset + K * mv > pool_size:
        raise UserError(
            f"--meta_batch_size {M} x --meta_batch_number {K} needs {K * mv} validation examples from id "
            f"{val_offset} on, but the {spec.dataset} data has only {pool_size} training images")


def _stats(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if dataset == "cifar100":
        return CIFAR100_MEAN, CIFAR100_STD
    if dataset in ("mnist", "mnist5k"):
        return MNIST_MEAN, MNIST_STD
    return CIFAR10_MEAN, CIFAR10_STD  # restricted ImageNet keeps CIFAR-10's statistics (original quirk)


def load_data(spec: DataSpec, device: torch.device) -> AnytimeData:
    """Build the run's :class:`AnytimeData` (``--dataset``, ``--data_source`` …)."""
    val_offset = default_val_offset(spec)
    mean, std = _stats(spec.dataset)
    num_classes = NUM_CLASSES[spec.dataset]
    digits = spec.dataset in ("mnist", "mnist5k")
    channels = 1 if digits else 3
    crop = 2 if digits else 4
    flip = not digits
    if spec.data_source == "synthetic":
        size = spec.image_size or (28 if digits else (224 if spec.dataset == "restricted_imagenet" else 32))
        if spec.dataset == "restricted_imagenet":
            crop = max(1, size // 8)
        n_pool = max(_pool_need(spec, val_offset), 50000 if spec.dataset != "restricted_imagenet" else 0)
        n_test = min(10000, spec.test_limit or 10000)
        shape = (channels, size, size)
        pool = SyntheticSource(n_pool, num_classes, shape, seed=0, device=device)
        test = SyntheticSource(n_test, num_classes, shape, seed=1, device=device)
        # The test set shares the class prototypes of the pool (seed 0), with its own noise.
        test.prototypes = pool.prototypes
        desc = f"synthetic {spec.dataset} ({n_pool} pool images of {size}x{size}, {n_test} test)"
        data = AnytimeData(pool=pool, test=test, num_classes=num_classes, in_channels=channels, mean=mean, std=std,
                           val_offset=val_offset, crop_padding=crop, flip=flip, description=desc)
    elif spec.dataset in ("cifar10", "cifar100"):
        data = _real_cifar(spec, device, val_offset)
    elif spec.dataset == "restricted_imagenet":
        pool, test, n_classes, desc = restricted_imagenet(spec, device)
        size = spec.image_size or 224
        data = AnytimeData(pool=pool, test=test, num_classes=n_classes, in_channels=3, mean=mean, std=std,
                           val_offset=val_offset, crop_padding=max(1, size // 8), flip=True, description=desc)
    else:
        data = _real_mnist(spec, device, val_offset)
    if spec.test_limit is not None and len(data.test) > spec.test_limit:
        data.test = data.test.head(spec.test_limit)  # the synthetic test set is already built at that size
    check_sizes(spec, val_offset, len(data.pool))
    return data


def _real_cifar(spec: DataSpec, device: torch.device, val_offset: int) -> AnytimeData:
    root = resolve_root(spec.data, "../data")
    pickled = (root / ("cifar-10-batches-py" if spec.dataset == "cifar10" else "cifar-100-python")).is_dir()
    train_x, train_y, _ = load_cifar(root, spec.dataset, train=True, flag="--data")
    test_x, test_y, _ = load_cifar(root, spec.dataset, train=False, flag="--data")
    notes = []
    if pickled:
        desc = f"{spec.dataset.upper()} (torchvision layout at {root})"
    else:
        # The JPEG copy lists files by class folder; a fixed, seeded order stands in for the
        # lost pickle order so that chunks are not class-sorted.
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(spec.order_seed))
        train_x, train_y = train_x[perm], train_y[perm]
        desc = f"JPEG CIFAR-10 at {root} (train order: fixed permutation, seed {spec.order_seed})"
        notes.append("JPEG CIFAR-10: pixels differ from the original pickles; train order re-drawn")
    mean, std = _stats(spec.dataset)
    return AnytimeData(pool=TensorSource(train_x, train_y, device), test=TensorSource(test_x, test_y, device),
                       num_classes=NUM_CLASSES[spec.dataset], in_channels=3, mean=mean, std=std,
                       val_offset=val_offset, crop_padding=4, flip=True, description=desc, notes=notes)


def _real_mnist(spec: DataSpec, device: torch.device, val_offset: int) -> AnytimeData:
    root = resolve_root(spec.data, "../data")
    mean, std = _stats(spec.dataset)
    x, y = load_mnist(root, train=True, flag="--data")
    if spec.dataset == "mnist":
        tx, ty = load_mnist(root, train=False, flag="--data")
        return AnytimeData(pool=TensorSource(x, y, device), test=TensorSource(tx, ty, device), num_classes=10,
                           in_channels=1, mean=mean, std=std, val_offset=val_offset, crop_padding=2, flip=False,
                           description=f"MNIST (60,000/10,000) at {root}")
    # MNIST-5k: a stratified 500-per-class subset of the training set, in a fixed shuffled order
    # (seed --order_seed): ids 0..3599 train pool, 3600..3999 validation pool, the last 1,000 test.
    gen = torch.Generator().manual_seed(spec.order_seed)
    picked = []
    for c in range(10):
        ids = torch.nonzero(y == c).flatten()
        picked.append(ids[torch.randperm(len(ids), generator=gen)[:500]])
    subset = torch.cat(picked)
    subset = subset[torch.randperm(len(subset), generator=gen)]
    sx, sy = x[subset], y[subset]
    return AnytimeData(pool=TensorSource(sx[:4000], sy[:4000], device), test=TensorSource(sx[4000:], sy[4000:], device),
                       num_classes=10, in_channels=1, mean=mean, std=std, val_offset=val_offset, crop_padding=2,
                       flip=False,
                       description=f"MNIST-5k (stratified 5,000 of real MNIST train at {root}, order seed {spec.order_seed})")
