"""A fake ``Flower102`` (or any ImageFolder set) for smoke tests, in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

from forgetting_common.data.fake import write_image_folder


def write_fake_folder_set(root: str | Path, set_name: str = "Flower102", num_classes: int = 102,
                          per_split: dict[str, int] | None = None, size: int = 40, seed: int = 0) -> Path:
    """``root/<set>/<split>/{000..}/NNNN.png``: class-patterned images plus noise (learnable).

    Class folders are named ``000``, ``001``, … as the Flower102 preparation names them.
    """
    counts = per_split or {"train": 2, "val": 1, "test": 1}
    write_image_folder(Path(root) / set_name, splits=tuple(counts), classes=[f"{c:03d}" for c in range(num_classes)],
                       per_class=counts, size=size, fmt="png", seed=seed)
    return Path(root)
