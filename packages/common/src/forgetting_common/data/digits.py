"""scikit-learn's bundled 8x8 digits: the one real dataset that needs no download."""

from __future__ import annotations

import torch


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(images uint8 [N, 8, 8] in 0..16, labels int64 [N])``."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype("uint8"))
    labels = torch.from_numpy(bunch.target.astype("int64"))
    return images, labels
