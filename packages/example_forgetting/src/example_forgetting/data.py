"""Array-backed datasets, training-set selection (removal), pixel noise and label noise.

Spec sections 5 and 6. All random draws of the data pipeline (removal, pixel noise, label
noise, per-epoch shuffles) come, in the original's order, from one ``numpy.random.RandomState``
seeded with ``--seed``; that is the same stream as the original's seeded global NumPy RNG, so
the random subsets, the noisy labels and the minibatch order equal the original's.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from forgetting_common.data import (
    DatasetError,
    download_guard,
    load_cifar,
    resolve_root,
)
from forgetting_common.data.fake import class_patterned_images
from forgetting_common.data.mnist import check_idx_file
from forgetting_common.data.roots import missing
from forgetting_common.errors import UserError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN = tuple(x / 255.0 for x in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(x / 255.0 for x in (63.0, 62.1, 66.7))
NUM_CLASSES = {"mnist": 10, "permuted_mnist": 10, "cifar10": 10, "cifar100": 100}
SYNTHETIC_SIZES = (1024, 256)  # train, test sizes of --data_source synthetic without limits


def original_data_root() -> Path:
    """The originals' hard-coded root: ``data`` in the system temporary directory (``/tmp/data``)."""
    return Path(tempfile.gettempdir()) / "data"


def data_root(flag: str | None) -> Path:
    """``--data_root``, else ``$FORGETTING_DATA``, else the original's ``/tmp/data``."""
    return resolve_root(flag, original_data_root())


@dataclass
class Split:
    """uint8 images ``[N, C, H, W]`` and int64 labels (CPU tensors)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, limit: int | None) -> Split:
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])


def synthetic(dataset: str, train_limit: int | None, test_limit: int | None) -> tuple[Split, Split]:
    """Deterministic class-conditional random images of the dataset's shape (seeds fixed, so every
    ``--seed`` sees the same examples and statistics of several runs can be combined)."""
    classes = NUM_CLASSES[dataset]
    shape = (1, 28, 28) if "mnist" in dataset else (3, 32, 32)
    n_train = train_limit or SYNTHETIC_SIZES[0]
    n_test = test_limit or SYNTHETIC_SIZES[1]
    out = []
    for n, seed in ((n_train, 0), (n_test, 1)):
        images, labels = class_patterned_images(n, classes, shape, seed=seed)
        out.append(Split(torch.from_numpy(images), torch.from_numpy(labels)))
    return out[0], out[1]


def load_real(dataset: str, root: Path, download: bool = True) -> tuple[Split, Split]:
    """MNIST from ``ROOT/MNIST/raw`` or CIFAR from its pickles / the JPEG CIFAR-10 layouts.

    Where the data is absent, a torchvision download is tried (the originals downloaded); a
    failed download leaves nothing behind and the error names the expected layout and the flag.
    Data that is present but broken (a truncated IDX file, an empty class folder, a corrupt
    image) is reported as such, never answered with a download.
    """
    try:
        train, test = _load_real(dataset, root)
    except DatasetError as missing_err:
        if not download or data_present(dataset, root):
            raise
        with download_guard(root):
            try:
                _download(dataset, root)
            except Exception as err:  # noqa: BLE001 - any download failure becomes one line
                raise DatasetError(f"{missing_err} (a download into {root} was tried and failed: {err})") from err
        train, test = _load_real(dataset, root)
    for split, what in ((train, "training"), (test, "test")):
        check_split(split, dataset, root, what)
    return train, test


def data_present(dataset: str, root: Path) -> bool:
    """Whether any of the dataset's files or folders are under ``root`` (then never download)."""
    if "mnist" in dataset:
        raw = root / "MNIST" / "raw"
        return raw.is_dir() and any(raw.iterdir())
    candidates = [root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")]
    if dataset == "cifar10":
        candidates += [root / "cifar10-jpeg", root / "cifar10-jpeg.zip", root / "train", root / "test"]
    return any(c.exists() for c in candidates)


def check_split(split: Split, dataset: str, root: Path, what: str) -> None:
    """Shapes and label range of a loaded split: a wrong file must not train on garbage."""
    shape = (1, 28, 28) if "mnist" in dataset else (3, 32, 32)
    if tuple(split.images.shape[1:]) != shape:
        raise DatasetError(
            f"{dataset} {what} images under {root} have shape {tuple(split.images.shape[1:])}, "
            f"expected {shape}; is --data_root pointing at another dataset?"
        )
    if split.images.shape[0] != split.labels.shape[0]:
        raise DatasetError(
            f"{dataset} {what} data under {root} has {split.images.shape[0]} images but "
            f"{split.labels.shape[0]} labels"
        )
    classes = NUM_CLASSES[dataset]
    if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= classes):
        raise DatasetError(
            f"{dataset} {what} labels under {root} range over {int(split.labels.min())}.."
            f"{int(split.labels.max())}, but {dataset} has classes 0..{classes - 1}"
        )


def _load_real(dataset: str, root: Path) -> tuple[Split, Split]:
    if "mnist" in dataset:
        return read_mnist(root, train=True), read_mnist(root, train=False)
    jpeg = dataset == "cifar10" and not (root / "cifar-10-batches-py").is_dir()
    parts = [load_cifar(root, dataset, train=t, flag="--data_root") for t in (True, False)]
    splits = [Split(x, y) for x, y, _ in parts]
    if jpeg:
        print(f"note: no CIFAR-10 pickles under {root}; read the JPEG CIFAR-10 layout "
              "(results on it are JPEG CIFAR-10, not the original pixels)", file=sys.stderr)
        # Class folders list the images class by class; a fixed shuffle (seed 0) gives them the
        # mixed order of the original pickles, so that --train_limit/--test_limit take mixed
        # classes. Example ids are positions in this fixed order.
        splits = [fixed_shuffle(s) for s in splits]
    return splits[0], splits[1]


MNIST_LAYOUT = "torchvision's ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
MNIST_FILES = tuple(f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))


def read_mnist(root: Path, train: bool) -> Split:
    """One MNIST split from torchvision's raw IDX files, read directly.

    The same uint8 values and int64 labels as torchvision's ``MNIST`` dataset, without importing
    torchvision, which alone costs about 170 MB of resident memory. Like torchvision, all four
    files must be present.
    """
    raw = root / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    paths = [raw / f"{prefix}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    for path in paths:
        check_idx_file(path)  # truncated or oversized files: one line naming the file
    if not all((raw / name).is_file() for name in MNIST_FILES):
        raise missing("MNIST", raw, MNIST_LAYOUT, "--data_root")
    images, labels = (_read_idx_uint8(path, ndim) for path, ndim in zip(paths, (3, 1)))
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _read_idx_uint8(path: Path, ndim: int) -> np.ndarray:
    with open(path, "rb") as handle:
        header = handle.read(4)
        if header[2] != 0x08 or header[3] != ndim:
            raise DatasetError(f"{path} is not an IDX file of {ndim}-dimensional unsigned bytes, as MNIST's are")
        dims = [int.from_bytes(handle.read(4), "big") for _ in range(ndim)]
        return np.fromfile(handle, dtype=np.uint8).reshape(dims)


def fixed_shuffle(split: Split, seed: int = 0) -> Split:
    order = torch.from_numpy(np.random.RandomState(seed).permutation(len(split)))
    return Split(split.images[order], split.labels[order])


def _download(dataset: str, root: Path) -> None:
    import torchvision

    cls = {
        "mnist": torchvision.datasets.MNIST,
        "permuted_mnist": torchvision.datasets.MNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }[dataset]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_splits(
    dataset: str,
    source: str,
    root: Path,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = True,
) -> tuple[Split, Split]:
    if source == "synthetic":
        return synthetic(dataset, train_limit, test_limit)
    train, test = load_real(dataset, root, download)
    return train.head(train_limit), test.head(test_limit)


# ---------------------------------------------------------------------------------------------
# Training-set selection (spec 6.1-6.3)


def check_sorting_ids(ordered: np.ndarray, n: int, path: str) -> None:
    if len(ordered) and (ordered.min() < 0 or ordered.max() >= n):
        raise UserError(
            f"sorting file {path} holds example ids up to {int(ordered.max())}, but the training set "
            f"has {n} examples (ids 0..{n - 1}); was it made for another dataset or --train_limit?"
        )


def select_training_indices(
    n: int,
    rng: np.random.RandomState,
    ordered: np.ndarray | None = None,
    remove_n: int = 0,
    keep_lowest_n: int = 0,
    remove_subsample: int = 0,
) -> np.ndarray:
    """``train_indx``: the original ids kept for training, in the original's position order.

    * selected removal: drop ``ordered[keep_lowest_n : keep_lowest_n + remove_n]`` (a window,
      truncated at the end of the order); the rest stays in ascending id order;
    * ``keep_lowest_n < 0``: a random subset of ``n - remove_n`` ids (a fresh permutation);
    * ``remove_subsample > 0`` (with ``keep_lowest_n >= 0``): keep a random
      ``keep_lowest_n - remove_subsample`` of the first ``keep_lowest_n`` sorted ids, then every
      sorted id from rank ``keep_lowest_n`` on (``remove_n`` is ignored, as in the original).
    """
    if remove_n < 0:
        raise UserError(f"--remove_n must be >= 0, got {remove_n}")
    if remove_n > n:
        raise UserError(f"--remove_n {remove_n} is larger than the training set ({n} examples)")
    if remove_subsample < 0:
        raise UserError(f"--remove_subsample must be >= 0, got {remove_subsample}")
    train_indx = np.arange(n, dtype=np.int64)
    if ordered is not None:
        removed = ordered[keep_lowest_n : keep_lowest_n + remove_n] if keep_lowest_n >= 0 else ordered[:0]
        train_indx = np.setdiff1d(train_indx, removed).astype(np.int64)
    if keep_lowest_n < 0:
        train_indx = rng.permutation(np.arange(n))[: n - remove_n].astype(np.int64)
    elif remove_subsample:
        if ordered is None:
            raise UserError("--remove_subsample needs a --sorting_file (it thins the lowest-ranked block)")
        if remove_subsample > keep_lowest_n:
            raise UserError(
                f"--remove_subsample {remove_subsample} is larger than the block it thins "
                f"(--keep_lowest_n {keep_lowest_n})"
            )
        lowest = ordered[:keep_lowest_n]
        kept = lowest[rng.permutation(np.arange(keep_lowest_n))[: keep_lowest_n - remove_subsample]]
        train_indx = np.concatenate([kept, ordered[keep_lowest_n:]]).astype(np.int64)
    if len(train_indx) == 0:
        raise UserError("the removal leaves no training examples; lower --remove_n")
    return train_indx


# ---------------------------------------------------------------------------------------------
# Noise (spec 6.5, 6.6)


def add_pixel_noise(
    images: np.ndarray,
    percent: int,
    std: float,
    rng: np.random.RandomState,
    mean: float = 120.0,
    clip: bool = False,
) -> np.ndarray:
    """Corrupt ``floor(percent * H * W / 100)`` distinct pixel positions of every uint8 image.

    ``images`` is ``[N, C, H, W]`` uint8 (a copy is returned). Per image, as the original draws
    them: the positions (without replacement), one channel per position (with replacement), then
    one N(mean, std) value per position, added to that single channel. The original stores the
    sum back into uint8 without clipping: truncation toward zero, then wrap-around modulo 256;
    ``clip=True`` clips to [0, 255] instead.
    """
    out = np.array(images, dtype=np.uint8, copy=True)
    n, c, h, w = out.shape
    num = int(np.floor(percent * h * w / 100))
    if num <= 0:
        return out
    rows = np.empty((n, num), dtype=np.int64)
    cols = np.empty((n, num), dtype=np.int64)
    chans = np.empty((n, num), dtype=np.int64)
    noise = np.empty((n, num), dtype=np.float64)
    for i in range(n):
        xy = rng.choice(h * w, num, replace=False)
        chans[i] = rng.choice(c, num, replace=True)
        rows[i], cols[i] = np.unravel_index(xy, (h, w))
        noise[i] = rng.normal(mean, std, num)  # the same stream as `num` single draws
    idx = np.arange(n).reshape(-1, 1)
    values = out[idx, chans, rows, cols].astype(np.float64) + noise
    if clip:
        new = np.clip(np.trunc(values), 0, 255).astype(np.uint8)
    else:
        new = (np.trunc(values).astype(np.int64) % 256).astype(np.uint8)
    out[idx, chans, rows, cols] = new
    return out


def add_label_noise(
    labels: np.ndarray, percent: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Change ``int(percent * N / 100)`` labels to a different class drawn uniformly.

    Returns ``(new_labels, positions, old, new)``. The candidate classes are the distinct labels
    present minus the true one (the original's ``np.delete(arange(C), true)`` on full datasets).
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    n = len(labels)
    k = int(percent * n / 100)
    classes = np.unique(labels)
    if k and len(classes) < 2:
        raise UserError("label noise needs at least two classes in the training set")
    positions = rng.choice(np.arange(n), k, replace=False)
    old = labels[positions].copy()
    new = np.empty(k, dtype=np.int64)
    for j, pos in enumerate(positions):
        choices = classes[classes != labels[pos]]
        new[j] = rng.choice(choices, 1)[0]
        labels[pos] = new[j]
    return labels, positions.astype(np.int64), old, new


def changed_labels_text(orig_ids: np.ndarray, old: np.ndarray, new: np.ndarray) -> str:
    """``original_id old_label new_label`` per line, as the original's ``_changed_labels.txt``."""
    return "".join(f"{int(i)} {int(o)} {int(n)}\n" for i, o, n in zip(orig_ids, old, new))
