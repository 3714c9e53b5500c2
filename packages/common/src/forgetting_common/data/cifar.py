"""CIFAR-10/100 from torchvision's pickled layout, or from JPEG class folders (a folder or a zip).

Images come back as uint8 tensors ``[N, 3, 32, 32]`` with int64 labels and the class names.

* Pickled layout (what ``torchvision.datasets.CIFAR10/100(download=True)`` leaves):
  ``ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
  ``ROOT/cifar-100-python/{train,test,meta}``. They are read directly rather than through
  torchvision's class, whose md5 check would reject the small fake copies the tests write.
* JPEG layout: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, in a folder or a zip (as in
  ``shared/data/cifar10-jpeg/cifar10-jpeg.zip``), read in place. Order: classes sorted by
  name, files sorted by name within a class. Decoding 60,000 JPEGs takes seconds, so the
  decoded arrays are cached beside nothing the user owns: in ``$XDG_CACHE_HOME/forgetting``
  (keyed by the source's path, size and modification time); pass ``cache=False`` to skip.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from forgetting_common.data.roots import DatasetError, missing

CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
JPEG_ZIPS = {"cifar10": ("cifar10-jpeg", "cifar10-jpeg.zip")}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def load_cifar_pickles(
    root: str | Path, name: str = "cifar10", train: bool = True, flag: str = "--data_dir"
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR from torchvision's pickled layout under ``root``."""
    if name not in CIFAR_DIRS:
        raise DatasetError(f"unknown CIFAR dataset {name!r}; use cifar10 or cifar100")
    base = Path(root) / CIFAR_DIRS[name]
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        meta_file, meta_key, label_key = "batches.meta", "label_names", "labels"
    else:
        files = ["train" if train else "test"]
        meta_file, meta_key, label_key = "meta", "fine_label_names", "fine_labels"
    layout = f"torchvision's pickled layout ROOT/{CIFAR_DIRS[name]}/{{{','.join(files)},{meta_file}}}"
    if not all((base / f).is_file() for f in [*files, meta_file]):
        raise missing(name.upper(), base, layout, flag)
    images, labels = [], []
    try:
        for f in files:
            with open(base / f, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        with open(base / meta_file, "rb") as handle:
            classes = list(pickle.load(handle, encoding="latin1")[meta_key])
    except (KeyError, ValueError, pickle.UnpicklingError, EOFError) as err:
        raise DatasetError(f"{name.upper()} at {base} is malformed ({err!r}); expected {layout}") from err
    return (
        torch.from_numpy(np.concatenate(images)),
        torch.tensor(labels, dtype=torch.int64),
        classes,
    )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "forgetting"


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image_zip_or_folder(
    source: str | Path, split: str, cache: bool = True, flag: str = "--data_dir"
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images of ``<split>/<class>/*`` from a folder or a zip, as uint8 ``[N, C, H, W]``.

    All images must share one size. Classes are the sorted folder names of the split.
    """
    source = Path(source)
    layout = f"{split}/<class>/*.jpg class folders (in a folder or a .zip)"
    if not source.exists():
        raise missing(f"image set '{split}'", source, layout, flag)
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{split}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = _cache_dir() / f"images-{key}.npz"
    if cache and source.is_file() and cached.is_file():
        with np.load(cached, allow_pickle=False) as npz:
            return (torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"]), list(npz["classes"]))

    entries: list[tuple[str, str]] = []  # (class, member/file path)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DatasetError(f"{source} is not a zip file; expected {layout}")
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                parts = member.strip("/").split("/")
                # Accept an optional top folder inside the zip: [top/]split/class/file.
                if len(parts) >= 3 and parts[-3] == split and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    entries.append((parts[-2], member))
            entries.sort()
            if not entries:
                raise DatasetError(f"{source} holds no images under {split}/<class>/; expected {layout}")
            arrays = [_decode(archive.read(member)) for _, member in entries]
    else:
        split_dir = source / split
        if not split_dir.is_dir():
            raise missing(f"image set '{split}'", split_dir, layout, flag)
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((class_dir.name, str(f)))
        if not entries:
            raise DatasetError(f"{split_dir} holds no images; expected {layout}")
        arrays = [_decode(Path(path).read_bytes()) for _, path in entries]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"images in {source} ({split}) differ in size: {sorted(shapes)[:3]} …")
    classes = sorted({c for c, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    images = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    labels = np.array([index[c] for c, _ in entries], dtype=np.int64)
    if cache and source.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, images=images, labels=labels, classes=np.array(classes))
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only home only costs the decode next time
    return torch.from_numpy(images), torch.from_numpy(labels), classes


def load_cifar(
    root: str | Path,
    name: str = "cifar10",
    train: bool = True,
    layout: str = "auto",
    flag: str = "--data_dir",
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10/100 under ``root`` in whichever layout is there.

    ``layout="auto"`` tries, in order: the pickled layout (``ROOT/cifar-10-batches-py``), the
    JPEG zip (``ROOT/cifar10-jpeg/cifar10-jpeg.zip``), a JPEG folder (``ROOT/cifar10-jpeg/`` or
    ``ROOT`` itself holding ``train/`` and ``test/``). ``"pickle"`` or ``"jpeg"`` force one.
    ``cache``: keep the decoded JPEGs of a zip for the next load (see the module notes).
    """
    root = Path(root)
    split = "train" if train else "test"
    if name not in CIFAR_DIRS:
        raise DatasetError(f"unknown CIFAR dataset {name!r}; use cifar10 or cifar100")
    if layout in ("auto", "pickle") and (root / CIFAR_DIRS[name]).is_dir():
        return load_cifar_pickles(root, name, train, flag)
    if layout == "pickle":
        return load_cifar_pickles(root, name, train, flag)
    if layout not in ("auto", "jpeg"):
        raise DatasetError(f"unknown CIFAR layout {layout!r}; use auto, pickle or jpeg")
    candidates = []
    if name in JPEG_ZIPS:
        folder, zip_name = JPEG_ZIPS[name]
        candidates += [root / folder / zip_name, root / zip_name, root / folder]
    candidates.append(root)
    if root.is_file():
        candidates.insert(0, root)
    for candidate in candidates:
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return load_image_zip_or_folder(candidate, split, cache=cache, flag=flag)
        if candidate.is_dir() and (candidate / split).is_dir():
            return load_image_zip_or_folder(candidate, split, cache=cache, flag=flag)
    expected = f"ROOT/{CIFAR_DIRS[name]}/ (torchvision pickles)"
    if name in JPEG_ZIPS:
        expected += f" or ROOT/{'/'.join(JPEG_ZIPS[name])} or ROOT/{JPEG_ZIPS[name][0]}/{{train,test}}/<class>/*.jpg"
    raise missing(name.upper(), root, expected, flag)
