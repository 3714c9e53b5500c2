"""MNIST, permuted MNIST and EMNIST through torchvision's IDX readers, as uint8 tensors."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from forgetting_common.data.roots import DatasetError, download_guard, missing

_IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path) -> None:
    """Stop with one line if an IDX file is shorter or longer than its own header says.

    torchvision would otherwise fail inside ``torch.frombuffer`` with an error that reads like
    a missing dataset.
    """
    if not path.is_file():
        return  # absence is reported by the caller as "not found"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_ITEM_BYTES:
            raise DatasetError(f"{path} is not an IDX file (bad magic number); it may be corrupt")
        ndim = header[3]
        dims_raw = handle.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DatasetError(f"{path} is truncated: {size} bytes, shorter than its own header")
    dims = [int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + _IDX_ITEM_BYTES[header[2]] * math.prod(dims)
    if size < expected:
        raise DatasetError(f"{path} is truncated: {size} bytes, expected {expected} for shape {dims}")
    if size > expected:
        raise DatasetError(f"{path} has {size} bytes, more than the {expected} its header {dims} says")


def _wrap_torchvision(what: str, root: Path, layout: str, flag: str, build, download: bool = False):
    try:
        if download:
            with download_guard(root.parent.parent):  # ROOT, given ROOT/<set>/raw
                return build()
        return build()
    except Exception as err:
        if download:
            raise DatasetError(
                f"{what} was not found at {root} and downloading it failed ({type(err).__name__}: {err}); "
                f"place it there as {layout}, or set the data root with {flag} or the FORGETTING_DATA variable"
            ) from err
        if isinstance(err, RuntimeError):  # torchvision: "Dataset not found. You can use download=True"
            raise missing(what, root, layout, flag) from err
        if not isinstance(err, ValueError | OSError | AssertionError):
            raise
        raise DatasetError(f"{what} at {root} is malformed ({err}); expected {layout}") from err


def load_mnist(
    root: str | Path, train: bool = True, download: bool = False, flag: str = "--data_dir"
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as ``(images uint8 [N, 28, 28], labels int64 [N])`` from ``ROOT/MNIST/raw/``."""
    from torchvision.datasets import MNIST

    root = Path(root)
    layout = "torchvision's ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    prefix = "train" if train else "t10k"
    for kind in ("images-idx3", "labels-idx1"):
        check_idx_file(root / "MNIST" / "raw" / f"{prefix}-{kind}-ubyte")
    ds = _wrap_torchvision(
        "MNIST", root / "MNIST" / "raw", layout, flag,
        lambda: MNIST(str(root), train=train, download=download), download,
    )
    return ds.data.clone(), ds.targets.to(torch.int64).clone()


def load_emnist(
    root: str | Path,
    split: str = "balanced",
    train: bool = True,
    download: bool = False,
    flag: str = "--data_dir",
) -> tuple[torch.Tensor, torch.Tensor]:
    """EMNIST ``split`` as uint8 images [N, 28, 28] (as stored, i.e. transposed) and int64 labels."""
    from torchvision.datasets import EMNIST

    root = Path(root)
    layout = f"torchvision's ROOT/EMNIST/raw/emnist-{split}-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte"
    for kind in ("images-idx3", "labels-idx1"):
        check_idx_file(root / "EMNIST" / "raw" / f"emnist-{split}-{'train' if train else 'test'}-{kind}-ubyte")
    ds = _wrap_torchvision(
        "EMNIST", root / "EMNIST" / "raw", layout, flag,
        lambda: EMNIST(str(root), split=split, train=train, download=download), download,
    )
    return ds.data.clone(), ds.targets.to(torch.int64).clone()


def pixel_permutation(seed: int, num_pixels: int = 784) -> torch.Tensor:
    """A fixed permutation of ``num_pixels`` pixel positions drawn from ``seed`` (CPU, int64)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_pixels, generator=gen)


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Apply one pixel permutation to every image of ``[N, H, W]`` or ``[N, C, H, W]`` images."""
    shape = images.shape
    flat = images.reshape(shape[0], -1, shape[-2] * shape[-1])
    return flat[:, :, permutation.to(images.device)].reshape(shape)
