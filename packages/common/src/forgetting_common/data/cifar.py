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
import zipfile
from pathlib import Path

import numpy as np
import torch

from forgetting_common.data.roots import DatasetError, missing
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_pickle

CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
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
            entry = load_pickle(base / f, encoding="latin1", what=f"{name.upper()} batch")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        classes = list(load_pickle(base / meta_file, encoding="latin1", what=f"{name.upper()} metadata")[meta_key])
    except (KeyError, ValueError, TypeError, UserError) as err:
        raise DatasetError(f"{name.upper()} at {base} is malformed ({err}); expected {layout}") from err
    return (
        torch.from_numpy(np.concatenate(images)),
        torch.tensor(labels, dtype=torch.int64),
        classes,
    )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "forgetting"


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for broken files
        raise DatasetError(f"image {where} cannot be decoded ({err}); replace or remove it") from err


def _check_classes(
    found: dict[str, int], where: str, layout: str, expected: list[str] | None
) -> list[str]:
    """Sorted class names; every class folder must hold images and match ``expected``.

    An empty class folder would otherwise vanish from the class list and shift every later
    label by one, silently.
    """
    empty = sorted(name for name, count in found.items() if count == 0)
    if empty:
        raise DatasetError(f"class folder {where}/{empty[0]} holds no images; expected {layout}")
    classes = sorted(found)
    if expected is not None and classes != sorted(expected):
        lacking = sorted(set(expected) - set(classes))
        extra = sorted(set(classes) - set(expected))
        if lacking:
            raise DatasetError(
                f"class folder {where}/{lacking[0]} is missing ({len(classes)} of {len(expected)} classes found); "
                f"expected {layout} with classes {', '.join(sorted(expected))}"
            )
        raise DatasetError(
            f"{where} has class folders {', '.join(extra[:3])} that are not classes of this dataset "
            f"(expected {', '.join(sorted(expected))})"
        )
    return classes


def class_folders(source: str | Path, split: str) -> list[str] | None:
    """The class folder names under ``split/`` of a folder or zip (None if the split is absent)."""
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            names = set()
            for member in archive.namelist():
                parts = member.strip("/").split("/")
                if len(parts) >= 2 and parts[-2] == split and member.endswith("/"):
                    names.add(parts[-1])
                elif len(parts) >= 3 and parts[-3] == split:
                    names.add(parts[-2])
        return sorted(names) or None
    split_dir = source / split
    if not split_dir.is_dir():
        return None
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def load_image_zip_or_folder(
    source: str | Path,
    split: str,
    cache: bool = True,
    flag: str = "--data_dir",
    classes: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images of ``<split>/<class>/*`` from a folder or a zip, as uint8 ``[N, C, H, W]``.

    All images must share one size. Classes are the sorted folder names of the split; every
    class folder must hold at least one image, and with ``classes`` given the folders must be
    exactly those classes (a missing, empty or extra class folder is an error naming it).
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
            names = [str(c) for c in npz["classes"]]
            if classes is None or names == sorted(classes):
                return (torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"]), names)

    entries: list[tuple[str, str]] = []  # (class, member/file path)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DatasetError(f"{source} is not a zip file; expected {layout}")
        with zipfile.ZipFile(source) as archive:
            found: dict[str, int] = {}
            for member in archive.namelist():
                parts = member.strip("/").split("/")
                # Accept an optional top folder inside the zip: [top/]split/class/file.
                if member.endswith("/") and len(parts) >= 2 and parts[-2] == split:
                    found.setdefault(parts[-1], 0)  # a class folder entry, images or not
                elif len(parts) >= 3 and parts[-3] == split and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    entries.append((parts[-2], member))
                    found[parts[-2]] = found.get(parts[-2], 0) + 1
            entries.sort()
            if not entries:
                raise DatasetError(f"{source} holds no images under {split}/<class>/; expected {layout}")
            found_classes = _check_classes(found, f"{source}:{split}", layout, classes)
            arrays = [_decode(archive.read(member), f"{source}:{member}") for _, member in entries]
    else:
        split_dir = source / split
        if not split_dir.is_dir():
            raise missing(f"image set '{split}'", split_dir, layout, flag)
        found = {}
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            found[class_dir.name] = 0
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((class_dir.name, str(f)))
                    found[class_dir.name] += 1
        if not entries:
            raise DatasetError(f"{split_dir} holds no images; expected {layout}")
        found_classes = _check_classes(found, str(split_dir), layout, classes)
        arrays = [_decode(Path(path).read_bytes(), path) for _, path in entries]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"images in {source} ({split}) differ in size: {sorted(shapes)[:3]} …")
    classes = found_classes
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
        if (candidate.is_file() and zipfile.is_zipfile(candidate)) or (
            candidate.is_dir() and (candidate / split).is_dir()
        ):
            # The test split's classes must be the training split's, or labels mean other things.
            expected = None if train else class_folders(candidate, "train")
            images, labels, classes = load_image_zip_or_folder(
                candidate, split, cache=cache, flag=flag, classes=expected
            )
            if len(classes) != NUM_CLASSES[name]:
                raise DatasetError(
                    f"{candidate} has {len(classes)} class folders under {split}/ but {name.upper()} has "
                    f"{NUM_CLASSES[name]}; expected {split}/<class>/*.jpg for every class"
                )
            return images, labels, classes
    expected = f"ROOT/{CIFAR_DIRS[name]}/ (torchvision pickles)"
    if name in JPEG_ZIPS:
        expected += f" or ROOT/{'/'.join(JPEG_ZIPS[name])} or ROOT/{JPEG_ZIPS[name][0]}/{{train,test}}/<class>/*.jpg"
    raise missing(name.upper(), root, expected, flag)
