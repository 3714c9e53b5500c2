"""Restricted ImageNet from an ImageFolder root: ``<imagenet_path>/{train,val}/<super-class>/<images>``.

The images are decoded and resized on access (a folder of JPEGs does not fit in memory as
tensors); few-shot mode keeps the first ``--n_shots`` files per class; the train list is put in
a fixed seeded order (the original's loader order is not recoverable).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from forgetting_common.data import DatasetError

LAYOUT = "ImageFolder layout <imagenet_path>/{train,val}/<super-class>/<images> with 14 class folders"
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".jpe")


class FolderSource:
    """Images listed as ``(path, label)``, decoded and resized to ``image_size`` on access."""

    def __init__(self, samples: Sequence[tuple[str, int]], image_size: int, device: torch.device | str = "cpu") -> None:
        self.samples = list(samples)
        self.image_size = image_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.samples)

    def head(self, n: int) -> FolderSource:
        """The first ``n`` images (``--test_limit``)."""
        return FolderSource(self.samples[:n], self.image_size, self.device)

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


def folder_samples(folder: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` of every image under ``folder/<class>/``, classes in sorted order."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    samples = []
    for label, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            if f.suffix.lower() in SUFFIXES:
                samples.append((str(f), label))
    return samples, classes


def restricted_imagenet(spec, device) -> tuple[FolderSource, FolderSource, int, str]:
    """``(train pool, test set, number of classes, description)`` of a :class:`lure.data.DataSpec`."""
    root = Path(spec.imagenet_path).expanduser()
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"restricted ImageNet not found at {root / split}: expected {LAYOUT}; "
                               f"set it with --imagenet_path")
        splits[split], classes = folder_samples(root / split)
        if not splits[split]:
            raise DatasetError(f"{root / split} holds no images; expected {LAYOUT}")
    train = splits["train"]
    if spec.few_shot:
        per_class: dict[int, int] = {}
        kept = []
        for path, label in train:
            if per_class.get(label, 0) < spec.n_shots:
                kept.append((path, label))
                per_class[label] = per_class.get(label, 0) + 1
        train = kept
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(spec.order_seed)).tolist()
    train = [train[i] for i in order]
    size = spec.image_size or 224
    desc = f"restricted ImageNet folders at {root} ({len(classes)} classes, {size}x{size}" + (
        f", few-shot {spec.n_shots}/class)" if spec.few_shot else ")")
    return FolderSource(train, size, device), FolderSource(splits["val"], size, device), len(classes), desc
