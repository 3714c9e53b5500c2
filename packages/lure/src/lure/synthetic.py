"""A *virtual* labelled image set of any nominal size whose images are computed from their index.

It stands in for CIFAR or restricted ImageNet in smoke runs and tests: the original offsets
(45,000, 80,565) work unchanged, and nothing is held in memory until an index is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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


