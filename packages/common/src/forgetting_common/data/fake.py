"""Writers of tiny fake datasets in the real on-disk layouts, for the packages' tests.

Each writer produces files the real readers accept unchanged (torchvision's IDX reader, the
CIFAR pickles, image folders, zips, text corpora). Images carry a class-dependent pattern
plus noise, so a model can learn them a little, which learning-sanity tests need.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from forgetting_common.data.cifar import CIFAR_DIRS


def class_patterned_images(
    n: int, num_classes: int, shape: Sequence[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images of ``shape`` whose mean pattern depends on the label, and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    prototypes = rng.integers(0, 256, size=(num_classes, *shape))
    noise = rng.normal(0, 40, size=(n, *shape))
    images = np.clip(prototypes[labels] * 0.7 + 40 + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0, folder: str = "MNIST") -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (torchvision's layout)."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = class_patterned_images(n, 10, (28, 28), s)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_images(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_labels(labels))
    return Path(root)


def write_emnist(
    root: str | Path, split: str = "balanced", num_classes: int = 47, n_train: int = 200, n_test: int = 100, seed: int = 0
) -> Path:
    """``root/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``."""
    raw = Path(root) / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = class_patterned_images(n, num_classes, (28, 28), s)
        (raw / f"emnist-{split}-{part}-images-idx3-ubyte").write_bytes(_idx_images(images))
        (raw / f"emnist-{split}-{part}-labels-idx1-ubyte").write_bytes(_idx_labels(labels))
    return Path(root)


def write_cifar(
    root: str | Path, name: str = "cifar10", n_train: int = 100, n_test: int = 50, seed: int = 0
) -> Path:
    """torchvision's pickled CIFAR layout (``cifar-10-batches-py`` or ``cifar-100-python``)."""
    base = Path(root) / CIFAR_DIRS[name]
    base.mkdir(parents=True, exist_ok=True)
    num_classes = 10 if name == "cifar10" else 100

    def dump(path: Path, obj: dict) -> None:
        path.write_bytes(pickle.dumps(obj, protocol=2))

    train_x, train_y = class_patterned_images(n_train, num_classes, (3, 32, 32), seed)
    test_x, test_y = class_patterned_images(n_test, num_classes, (3, 32, 32), seed + 1)
    names = [f"class{i}" for i in range(num_classes)]
    if name == "cifar10":
        chunks = np.array_split(np.arange(n_train), 5)
        for i, chunk in enumerate(chunks, start=1):
            dump(base / f"data_batch_{i}", {"data": train_x[chunk].reshape(len(chunk), -1), "labels": train_y[chunk].tolist()})
        dump(base / "test_batch", {"data": test_x.reshape(n_test, -1), "labels": test_y.tolist()})
        dump(base / "batches.meta", {"label_names": names})
    else:
        dump(base / "train", {"data": train_x.reshape(n_train, -1), "fine_labels": train_y.tolist(), "coarse_labels": (train_y // 5).tolist()})
        dump(base / "test", {"data": test_x.reshape(n_test, -1), "fine_labels": test_y.tolist(), "coarse_labels": (test_y // 5).tolist()})
        dump(base / "meta", {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    return Path(root)


def _encode(image_hwc: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image_hwc).save(buffer, format="JPEG" if fmt.lower() in ("jpg", "jpeg") else fmt.upper())
    return buffer.getvalue()


def write_image_folder(
    root: str | Path,
    splits: Sequence[str] = ("train", "test"),
    classes: Sequence[str] | int = 3,
    per_class: int | dict[str, int] = 4,
    size: int = 32,
    fmt: str = "jpg",
    seed: int = 0,
    zip_path: str | Path | None = None,
) -> Path:
    """``root/<split>/<class>/<NNNN>.<fmt>`` (or the same tree inside ``zip_path``)."""
    names = [f"class{i:03d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    root = Path(root)
    archive = zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) if zip_path is not None else None
    try:
        for s_index, split in enumerate(splits):
            count = per_class[split] if isinstance(per_class, dict) else per_class
            images, labels = class_patterned_images(count * len(names), len(names), (size, size, 3), seed + s_index)
            counters = dict.fromkeys(range(len(names)), 0)
            for image, label in zip(images, labels):
                rel = f"{split}/{names[label]}/{counters[label]:04d}.{fmt}"
                counters[label] += 1
                data = _encode(image, fmt)
                if archive is not None:
                    archive.writestr(rel, data)
                else:
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).write_bytes(data)
    finally:
        if archive is not None:
            archive.close()
    return Path(zip_path) if zip_path is not None else root


def write_cifar10_jpeg_zip(root: str | Path, per_class_train: int = 10, per_class_test: int = 5, seed: int = 0) -> Path:
    """``root/cifar10-jpeg/cifar10-jpeg.zip`` in the layout of the shared JPEG CIFAR-10."""
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    target = Path(root) / "cifar10-jpeg" / "cifar10-jpeg.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image_folder(root, ("train", "test"), classes, {"train": per_class_train, "test": per_class_test},
                       size=32, fmt="jpg", seed=seed, zip_path=target)
    return target


def write_text_corpus(
    root: str | Path, vocab_size: int = 50, lines: dict[str, int] | None = None, words_per_line: int = 12, seed: int = 0
) -> Path:
    """``root/{train,valid,test}.txt`` of sentences over ``w0 … w<vocab_size-1>`` (Zipf-like)."""
    counts = lines or {"train": 200, "valid": 40, "test": 40}
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    weights = 1.0 / np.arange(1, vocab_size + 1)
    weights /= weights.sum()
    for split, n in counts.items():
        rows = []
        for _ in range(n):
            ids = rng.choice(vocab_size, size=words_per_line, p=weights)
            rows.append(" " + " ".join(f"w{i}" for i in ids) + " ")
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
