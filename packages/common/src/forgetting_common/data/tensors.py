"""Small image datasets held as tensors on the device, batched by index, augmented per batch.

MNIST- and CIFAR-sized sets fit in memory many times over; keeping them on the device and
drawing batches by index removes the DataLoader and every per-example Python call from the
hot loop (the airbench recipe). Augmentation works on whole batches and takes a generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float = 255.0
) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (or ``[N, H, W]``) → float32 ``(x / scale - mean) / std`` per channel."""
    x = images.to(torch.float32) / scale
    if x.dim() == 3:
        x = x.unsqueeze(1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def index_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Index tensors covering ``range(n)`` once, in a permuted order drawn on the CPU."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))  # [n, h]
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))  # [n, w]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None, holes: int = 1) -> torch.Tensor:
    """Zero ``holes`` squares of side ``length`` per image, centred anywhere (clipped at edges).

    This is DeVries & Taylor's Cutout: the centre is uniform over the image, so part of the
    square may fall outside it.
    """
    if length <= 0 or holes <= 0:
        return x
    n, _, h, w = x.shape
    keep = torch.ones(n, 1, h, w, dtype=x.dtype, device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    for _ in range(holes):
        cy = torch.randint(0, h, (n,), generator=generator).to(x.device).view(n, 1, 1)
        cx = torch.randint(0, w, (n,), generator=generator).to(x.device).view(n, 1, 1)
        # Rows and columns [c - length//2, c + length//2), clipped by the border, as in Cutout.
        half = length // 2
        inside = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
        keep = keep * (~inside).unsqueeze(1).to(x.dtype)
    return x * keep


def augment_batch(
    x: torch.Tensor,
    *,
    crop_padding: int = 0,
    flip: bool = False,
    cutout_length: int = 0,
    cutout_holes: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop (with zero padding), then flip, then Cutout, each drawn per image from ``generator``."""
    if crop_padding:
        x = random_crop(x, crop_padding, generator)
    if flip:
        x = random_flip(x, generator)
    if cutout_length:
        x = cutout(x, cutout_length, generator, cutout_holes)
    return x


@dataclass
class ImageTensors:
    """A labelled image set on one device: ``images`` float ``[N, C, H, W]``, ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> ImageTensors:
        return ImageTensors(self.images.to(device), self.labels.to(device))

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageTensors:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return ImageTensors(self.images[idx], self.labels[idx])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        **augment: int | bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(indices, images, labels)``; keyword arguments go to :func:`augment_batch`."""
        for idx in index_batches(
            len(self), batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
            device=self.images.device,
        ):
            x = self.images[idx]
            if augment:
                x = augment_batch(x, generator=generator, **augment)  # type: ignore[arg-type]
            yield idx, x, self.labels[idx]
