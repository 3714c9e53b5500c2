"""Data for the anytime protocol: indexable image pools, the chunk arithmetic and the replay modes.

A *source* is an indexable pool of labelled images: ``fetch(indices)`` returns float images in
[0, 1] (``[B, C, H, W]``) and int64 labels on the run's device. The training pool holds the
train ids ``[0, val_offset)`` and the validation ids ``[val_offset, ...)``, exactly the original
index arithmetic (offset 45,000 for CIFAR, 80,565 for restricted ImageNet).

Sources:

* :class:`TensorSource`: a whole dataset held as a uint8 tensor on the device (CIFAR, MNIST).
* :class:`SyntheticSource`: a *virtual* dataset of any nominal size whose images are computed
  on access from the index (a fixed class prototype plus index-hashed noise), so the original
  offsets work at no memory cost.
* :class:`FolderSource`: image files (restricted ImageNet ImageFolder), decoded on access.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.data import DatasetError, load_cifar, load_mnist, resolve_root
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

#: Start of the validation pool (= size of the train pool) per dataset, as in the original.
VAL_OFFSETS = {"cifar10": 45000, "cifar100": 45000, "restricted_imagenet": 80565, "mnist": 55000, "mnist5k": 3600}
FEW_SHOT_OFFSET = 6800
DATASETS = ("cifar10", "cifar100", "restricted_imagenet", "mnist", "mnist5k")


# --------------------------------------------------------------------------- sources
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

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.device)
        return self.images[idx].to(torch.float32).div_(255.0), self.labels[idx]


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix of int64 values (vectorised, deterministic on every device)."""
    mask = 0xFFFFFFFF
    x = x & mask
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & mask
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & mask
    return x ^ (x >> 16)


class SyntheticSource:
    """A virtual labelled image set: image ``i`` is computed from ``i`` alone.

    The label is a hash of the index; the image is the label's smooth random prototype plus
    uniform noise hashed from (index, pixel). Classes are therefore learnable, and any nominal
    size costs nothing until an index is fetched.
    """

    def __init__(self, n: int, num_classes: int, shape: Sequence[int], seed: int = 0,
                 device: torch.device | str = "cpu", noise: float = 0.35) -> None:
        self.n = int(n)
        self.num_classes = num_classes
        self.shape = tuple(int(s) for s in shape)
        self.seed = seed
        self.device = torch.device(device)
        self.noise = noise
        gen = torch.Generator().manual_seed(10_007 + seed)
        c, h, w = self.shape
        coarse = torch.rand(num_classes, c, 4, 4, generator=gen)
        self.prototypes = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).to(self.device)
        self._numel = c * h * w

    def __len__(self) -> int:
        return self.n

    def labels_of(self, idx: torch.Tensor) -> torch.Tensor:
        return _hash32(idx.to(torch.int64) * 2654435761 + 97 + self.seed) % self.num_classes

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(device=self.device, dtype=torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise IndexError(f"index out of range for a synthetic set of {self.n}")
        labels = self.labels_of(idx)
        pix = torch.arange(self._numel, device=self.device, dtype=torch.int64)
        keys = (idx.view(-1, 1) * self._numel + pix.view(1, -1)) ^ (self.seed * 0x9E3779B1)
        noise = _hash32(keys).to(torch.float32) / 4294967296.0
        base = self.prototypes[labels].reshape(len(idx), -1)
        x = (1.0 - self.noise) * base + self.noise * noise
        return x.view(len(idx), *self.shape), labels


class FolderSource:
    """Images listed as ``(path, label)``, decoded and resized to ``image_size`` on access."""

    def __init__(self, samples: Sequence[tuple[str, int]], image_size: int, device: torch.device | str = "cpu") -> None:
        self.samples = list(samples)
        self.image_size = image_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> np.ndarray:
        from PIL import Image

        try:  # decoded lazily, so a damaged file shows up here, mid-run (the last epoch checkpoint remains)
            with Image.open(path) as image:
                return self._fit(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(f"image {path} cannot be decoded ({err}); replace or remove it") from err

    def _fit(self, image) -> np.ndarray:
        """Resize the shorter side to ``image_size`` and centre-crop a square."""
        w, h = image.size
        scale = self.image_size / min(w, h)
        image = image.resize((max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))))
        w, h = image.size
        left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return np.asarray(image, dtype=np.uint8)

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.samples[int(i)] for i in idx.tolist()]
        arrays = np.stack([self._load(p) for p, _ in rows]).transpose(0, 3, 1, 2)
        images = torch.from_numpy(np.ascontiguousarray(arrays)).to(self.device, torch.float32).div_(255.0)
        labels = torch.tensor([label for _, label in rows], dtype=torch.int64, device=self.device)
        return images, labels


# --------------------------------------------------------------------------- the dataset of a run
@dataclass
class AnytimeData:
    """Everything the engine needs to know about a dataset."""

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


def split_sizes(meta_batch_size: int) -> tuple[int, int]:
    """``(mt, mv)``: 90% of a meta-batch for training (floored), the rest for validation."""
    mt = (meta_batch_size * 9) // 10
    return mt, meta_batch_size - mt


def chunk_ids(k: int, meta_batch_size: int, val_offset: int) -> tuple[list[int], list[int]]:
    """Train and validation ids of chunk ``k`` (1-based), in the dataset's order."""
    mt, mv = split_sizes(meta_batch_size)
    train = list(range((k - 1) * mt, k * mt))
    val = list(range(val_offset + (k - 1) * mv, val_offset + k * mv))
    return train, val


def replay_mode(args) -> str:
    """The replay mode of a run: ``no``, ``one``, ``buffer`` or ``full`` (the default)."""
    chosen = [name for name, flag in (("no", "no_replay"), ("one", "one_replay"), ("buffer", "buffer_replay"))
              if getattr(args, flag, False)]
    if len(chosen) > 1:
        raise UserError(
            "conflicting replay flags: " + " and ".join(f"-{c}_replay" for c in chosen)
            + " (give at most one; none means full replay)"
        )
    mode = chosen[0] if chosen else "full"
    if args.dataset == "cifar100" and mode in ("one", "buffer"):
        warnings.warn(
            f"-{mode}_replay is not available for cifar100 in the original and falls back to full replay",
            stacklevel=2,
        )
        mode = "full"
    return mode


class ReplayPlan:
    """The train and validation id lists of every state, with the growing buffer of buffer replay."""

    def __init__(self, mode: str, meta_batch_size: int, val_offset: int,
                 buffer_size_train: int = 182, buffer_size_val: int = 182, seed: int = 0) -> None:
        self.mode = mode
        self.meta_batch_size = meta_batch_size
        self.val_offset = val_offset
        self.buffer_size_train = buffer_size_train
        self.buffer_size_val = buffer_size_val
        self.rng = random.Random(seed)
        self.buffer_train: list[int] = []
        self.buffer_val: list[int] = []

    def state(self, k: int) -> tuple[list[int], list[int]]:
        """The lists of state ``k`` (call in order k = 1, 2, …: buffer replay updates its buffer)."""
        span = {"no": range(k, k + 1), "one": range(max(1, k - 1), k + 1), "full": range(1, k + 1),
                "buffer": range(k, k + 1)}[self.mode]
        train: list[int] = []
        val: list[int] = []
        for j in span:
            t, v = chunk_ids(j, self.meta_batch_size, self.val_offset)
            train += t
            val += v
        if self.mode == "buffer":
            train = train + self.buffer_train
            val = val + self.buffer_val
            self.buffer_train += self._sample(train, self.buffer_size_train, "train")
            self.buffer_val += self._sample(val, self.buffer_size_val, "val")
        return train, val

    def _sample(self, ids: list[int], size: int, what: str) -> list[int]:
        if size > len(ids):
            warnings.warn(
                f"--buffer_size_{what} {size} is larger than the state's {what} list ({len(ids)}); "
                f"adding all {len(ids)} ids instead", stacklevel=3)
            size = len(ids)
        return self.rng.sample(ids, size)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "buffer_train": list(self.buffer_train), "buffer_val": list(self.buffer_val)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.buffer_train = list(state["buffer_train"])
        self.buffer_val = list(state["buffer_val"])


# --------------------------------------------------------------------------- building a dataset
def _pool_need(args, val_offset: int) -> int:
    _, mv = split_sizes(args.meta_batch_size)
    return val_offset + args.meta_batch_number * mv


def default_val_offset(args) -> int:
    if args.val_offset is not None:
        return args.val_offset
    if args.dataset == "restricted_imagenet" and args.few_shot:
        return FEW_SHOT_OFFSET
    return VAL_OFFSETS[args.dataset]


def check_sizes(args, val_offset: int, pool_size: int) -> None:
    """Fail early where the original would silently overlap chunks with the validation pool."""
    mt, mv = split_sizes(args.meta_batch_size)
    K, M = args.meta_batch_number, args.meta_batch_size
    if mt < 1 or mv < 1:
        raise UserError(f"--meta_batch_size {M} is too small: it must give at least one training and one "
                        f"validation example (90%/10% split)")
    if K * mt > val_offset:
        raise UserError(
            f"--meta_batch_size {M} x --meta_batch_number {K} needs {K * mt} training examples but the "
            f"{args.dataset} training pool holds {val_offset} (ids below the validation pool at {val_offset})")
    if val_offset + K * mv > pool_size:
        raise UserError(
            f"--meta_batch_size {M} x --meta_batch_number {K} needs {K * mv} validation examples from id "
            f"{val_offset} on, but the {args.dataset} data has only {pool_size} training images")


def _stats(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if dataset == "cifar100":
        return CIFAR100_MEAN, CIFAR100_STD
    if dataset in ("mnist", "mnist5k"):
        return MNIST_MEAN, MNIST_STD
    return CIFAR10_MEAN, CIFAR10_STD  # restricted ImageNet keeps CIFAR-10's statistics (original quirk)


def load_data(args, device: torch.device) -> AnytimeData:
    """Build the run's :class:`AnytimeData` from the flags (``--dataset``, ``--data_source`` …)."""
    val_offset = default_val_offset(args)
    mean, std = _stats(args.dataset)
    num_classes = {"cifar10": 10, "cifar100": 100, "restricted_imagenet": 14, "mnist": 10, "mnist5k": 10}[args.dataset]
    digits = args.dataset in ("mnist", "mnist5k")
    channels = 1 if digits else 3
    crop = 2 if digits else 4
    flip = not digits
    if args.data_source == "synthetic":
        size = args.image_size or (28 if digits else (224 if args.dataset == "restricted_imagenet" else 32))
        if args.dataset == "restricted_imagenet":
            crop = max(1, size // 8)
        n_pool = max(_pool_need(args, val_offset), 50000 if args.dataset != "restricted_imagenet" else 0)
        n_test = min(10000, args.test_limit or 10000)
        shape = (channels, size, size)
        pool = SyntheticSource(n_pool, num_classes, shape, seed=0, device=device)
        test = SyntheticSource(n_test, num_classes, shape, seed=1, device=device)
        # The test set shares the class prototypes of the pool (seed 0), with its own noise.
        test.prototypes = pool.prototypes
        desc = f"synthetic {args.dataset} ({n_pool} pool images of {size}x{size}, {n_test} test)"
        data = AnytimeData(pool, test, num_classes, channels, mean, std, val_offset, crop, flip, desc)
    elif args.dataset in ("cifar10", "cifar100"):
        data = _real_cifar(args, device, val_offset, num_classes, mean, std)
    elif args.dataset == "restricted_imagenet":
        data = _real_restricted_imagenet(args, device, val_offset, mean, std)
    else:
        data = _real_mnist(args, device, val_offset, mean, std)
    if args.test_limit is not None and len(data.test) > args.test_limit and not isinstance(data.test, SyntheticSource):
        data.test = _limit(data.test, args.test_limit)
    check_sizes(args, val_offset, len(data.pool))
    return data


def _limit(source, n: int):
    if isinstance(source, TensorSource):
        return TensorSource(source.images[:n], source.labels[:n], source.device)
    if isinstance(source, FolderSource):
        return FolderSource(source.samples[:n], source.image_size, source.device)
    return source


def _real_cifar(args, device, val_offset, num_classes, mean, std) -> AnytimeData:
    root = resolve_root(args.data, "../data")
    pickled = (root / ("cifar-10-batches-py" if args.dataset == "cifar10" else "cifar-100-python")).is_dir()
    train_x, train_y, _ = load_cifar(root, args.dataset, train=True, flag="--data")
    test_x, test_y, _ = load_cifar(root, args.dataset, train=False, flag="--data")
    notes = []
    if pickled:
        desc = f"{args.dataset.upper()} (torchvision layout at {root})"
    else:
        # The JPEG copy lists files by class folder; a fixed, seeded order stands in for the
        # lost pickle order so that chunks are not class-sorted.
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(args.order_seed))
        train_x, train_y = train_x[perm], train_y[perm]
        desc = f"JPEG CIFAR-10 at {root} (train order: fixed permutation, seed {args.order_seed})"
        notes.append("JPEG CIFAR-10: pixels differ from the original pickles; train order re-drawn")
    return AnytimeData(TensorSource(train_x, train_y, device), TensorSource(test_x, test_y, device),
                       num_classes, 3, mean, std, val_offset, 4, True, desc, notes)


def _folder_samples(folder: Path) -> tuple[list[tuple[str, int]], list[str]]:
    suffixes = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".jpe")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    samples = []
    for label, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            if f.suffix.lower() in suffixes:
                samples.append((str(f), label))
    return samples, classes


def _real_restricted_imagenet(args, device, val_offset, mean, std) -> AnytimeData:
    root = Path(args.imagenet_path).expanduser()
    layout = "ImageFolder layout <imagenet_path>/{train,val}/<super-class>/<images> with 14 class folders"
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"restricted ImageNet not found at {root / split}: expected {layout}; "
                               f"set it with --imagenet_path")
        splits[split], classes = _folder_samples(root / split)
        if not splits[split]:
            raise DatasetError(f"{root / split} holds no images; expected {layout}")
    train = splits["train"]
    if args.few_shot:
        per_class: dict[int, int] = {}
        kept = []
        for path, label in train:
            if per_class.get(label, 0) < args.n_shots:
                kept.append((path, label))
                per_class[label] = per_class.get(label, 0) + 1
        train = kept
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.order_seed)).tolist()
    train = [train[i] for i in order]
    size = args.image_size or 224
    desc = f"restricted ImageNet folders at {root} ({len(classes)} classes, {size}x{size}" + (
        f", few-shot {args.n_shots}/class)" if args.few_shot else ")")
    return AnytimeData(FolderSource(train, size, device), FolderSource(splits["val"], size, device),
                       len(classes), 3, mean, std, val_offset, max(1, size // 8), True, desc)


def _real_mnist(args, device, val_offset, mean, std) -> AnytimeData:
    root = resolve_root(args.data, "../data")
    x, y = load_mnist(root, train=True, flag="--data")
    if args.dataset == "mnist":
        tx, ty = load_mnist(root, train=False, flag="--data")
        return AnytimeData(TensorSource(x, y, device), TensorSource(tx, ty, device), 10, 1, mean, std,
                           val_offset, 2, False, f"MNIST (60,000/10,000) at {root}")
    # MNIST-5k: a stratified 500-per-class subset of the training set, in a fixed shuffled order
    # (seed --order_seed): ids 0..3599 train pool, 3600..3999 validation pool, the last 1,000 test.
    gen = torch.Generator().manual_seed(args.order_seed)
    picked = []
    for c in range(10):
        ids = torch.nonzero(y == c).flatten()
        picked.append(ids[torch.randperm(len(ids), generator=gen)[:500]])
    subset = torch.cat(picked)
    subset = subset[torch.randperm(len(subset), generator=gen)]
    sx, sy = x[subset], y[subset]
    return AnytimeData(TensorSource(sx[:4000], sy[:4000], device), TensorSource(sx[4000:], sy[4000:], device),
                       10, 1, mean, std, val_offset, 2, False,
                       f"MNIST-5k (stratified 5,000 of real MNIST train at {root}, order seed {args.order_seed})")
