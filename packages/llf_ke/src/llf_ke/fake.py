"""A deterministic fake ``Flower102`` (or any ImageFolder set) for smoke tests, in the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_fake_folder_set(root: str | Path, set_name: str = "Flower102", num_classes: int = 102,
                          per_split: dict[str, int] | None = None, size: int = 40, seed: int = 0) -> Path:
    """``root/<set>/{train,val,test}/{000..}/NNNN.png``: a class colour plus noise, learnable."""
    from PIL import Image

    counts = per_split or {"train": 2, "val": 1, "test": 1}
    rng = np.random.default_rng(seed)
    colours = rng.integers(20, 236, size=(num_classes, 3))
    for split, n in counts.items():
        for c in range(num_classes):
            folder = Path(root) / set_name / split / f"{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = colours[c][None, None, :] + rng.normal(0, 25, size=(size, size, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return Path(root)
