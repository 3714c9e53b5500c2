"""MNIST, permuted MNIST and EMNIST through torchvision's IDX readers, as uint8 tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from forgetting_common.data.roots import DatasetError, missing


def _wrap_torchvision(what: str, root: Path, layout: str, flag: str, build, download: bool = False):
    try:
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
