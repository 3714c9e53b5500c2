"""Datasets by their on-disk layouts, with the transforms of the LLF fork.

* ``Flower102``, ``Aircrafts``: ``<data>/<set>/{train,val,test}/<class>/*``.
* ``CUB200``, ``Dog120``, ``MIT67``: ``<data>/<set>/{train,test}/<class>/*``; validation reads
  the test folder and no separate test evaluation is made (``eval_tst`` is False).
* ``CIFAR10(val)``, ``CIFAR100(val)``, ``tinyImagenet_full/_val``: ``<data>/<set>/{train,test}/<class>/*``.
* ``Flower102Pytorch`` (KE's own layout): ``<data>/flower102/jpg/*.jpg`` and
  ``<data>/flower102/lists/{trn,val,tst}.csv`` with columns ``file_name,label``.
* ``Folder`` (extension): ``<data>/Folder/{train,val,test}/<class>/*``, classes counted from disk.

For ``Flower102`` a raw torchvision download (``<data>/flowers-102/{jpg,imagelabels.mat,setid.mat}``)
is also read directly when the ImageFolder tree is absent (official split, classes 000..101).

Class index = lexicographic order of the class folder names; the count must match the set.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from forgetting_common.data import DatasetError, image_folder_split
from forgetting_common.distributed import Dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from llf_ke.ddp import RankShareBatchSampler, seed_worker_by_rank

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

THREE_SPLIT_SETS = ("Flower102", "Aircrafts", "Folder")
TWO_SPLIT_SETS = ("CUB200", "Dog120", "MIT67", "CIFAR10", "CIFAR10val", "CIFAR100", "CIFAR100val",
                  "tinyImagenet_full", "tinyImagenet_val")


def resize_side(image_size: int) -> int:
    return int(round(image_size * 256 / 224))


def transforms_for(set_name: str, image_size: int, flip: bool = True):
    """(train transform, eval transform) of the original for ``set_name``."""
    from torchvision import transforms as T

    maybe_flip = [T.RandomHorizontalFlip()] if flip else []
    if set_name.startswith("CIFAR"):
        norm = T.Normalize(CIFAR_MEAN, CIFAR_STD)
        return (T.Compose([T.RandomCrop(32, padding=4), *maybe_flip, T.ToTensor(), norm]),
                T.Compose([T.ToTensor(), norm]))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if set_name.startswith("tinyImagenet"):
        return (T.Compose([T.RandomCrop(64, padding=4), *maybe_flip, T.ToTensor(), norm]),
                T.Compose([T.ToTensor(), norm]))
    side = resize_side(image_size)
    if set_name == "Flower102Pytorch":  # KE's own pipeline: no squash on the train side
        return (T.Compose([T.RandomResizedCrop(image_size), *maybe_flip, T.ToTensor(), norm]),
                T.Compose([T.Resize(side), T.CenterCrop(image_size), T.ToTensor(), norm]))
    return (T.Compose([T.Resize((side, side)), T.RandomResizedCrop(image_size), *maybe_flip, T.ToTensor(), norm]),
            T.Compose([T.Resize((side, side)), T.CenterCrop(image_size), T.ToTensor(), norm]))


class CorruptImageError(DatasetError):
    """An image file that PIL cannot decode; the message names the file.

    Raised in a DataLoader worker, it reaches the main process re-built from the worker's
    whole traceback text; the constructor keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "CorruptImageError: " in message:
            message = message.strip().splitlines()[-1].split("CorruptImageError: ", 1)[-1]
        super().__init__(message)


def read_rgb(path: str | Path):
    """The image at ``path`` as RGB (PIL), or :class:`CorruptImageError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for broken or truncated files
        raise CorruptImageError(f"image {path} cannot be decoded ({err}); replace or remove it") from err


class ListDataset(Dataset):
    """(path, label) pairs read with PIL, converted to RGB."""

    def __init__(self, items: list[tuple[Path, int]], classes: list[str], transform=None) -> None:
        self.items = items
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        image = read_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def read_flowers102_raw(raw: Path) -> dict[str, list[tuple[Path, int]]]:
    """The official split of a torchvision ``flowers-102`` folder: train/val/test (path, label 0..101)."""
    from scipy.io import loadmat

    try:
        labels = loadmat(str(raw / "imagelabels.mat"))["labels"].reshape(-1).astype(int) - 1
        setid = loadmat(str(raw / "setid.mat"))
    except (OSError, KeyError, ValueError) as err:
        raise DatasetError(f"{raw} is not a torchvision flowers-102 folder ({err}); expected "
                           "flowers-102/{jpg/image_NNNNN.jpg,imagelabels.mat,setid.mat}") from err
    out = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = setid[key].reshape(-1).astype(int)
        out[split] = [(raw / "jpg" / f"image_{i:05d}.jpg", int(labels[i - 1])) for i in ids]
    return out


def read_ke_lists(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """KE's ``flower102/lists/{trn,val,tst}.csv`` (file_name,label) over ``flower102/jpg``."""
    out = {}
    for split, fname in (("train", "trn.csv"), ("val", "val.csv"), ("test", "tst.csv")):
        path = root / "lists" / fname
        if not path.is_file():
            raise DatasetError(f"Flower102Pytorch list {path} not found: expected <data>/flower102/"
                               "{jpg/*.jpg,lists/{trn,val,tst}.csv}; set the root with --data")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        try:
            out[split] = [(root / "jpg" / Path(r["file_name"]).name, int(r["label"])) for r in rows]
        except (KeyError, ValueError) as err:
            raise DatasetError(f"{path}: expected columns file_name,label ({err})") from err
    return out


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int
    classes: list[str]


def load_splits(data_root: str | Path, set_name: str, num_cls: int, image_size: int = 224,
                flip: bool = True) -> Splits:
    """The train/val/test datasets of ``set_name`` under ``data_root``, checked."""
    root = Path(data_root)
    train_tf, eval_tf = transforms_for(set_name, image_size, flip)
    if set_name == "Flower102Pytorch":
        base = root / "flower102"
        lists = read_ke_lists(base)
        classes = [f"{i:03d}" for i in range(102)]
        return _checked(ListDataset(lists["train"], classes, train_tf), ListDataset(lists["val"], classes, eval_tf),
                        ListDataset(lists["test"], classes, eval_tf), num_cls, set_name, root)
    if set_name == "Flower102" and not (root / "Flower102").is_dir() and (root / "flowers-102").is_dir():
        items = read_flowers102_raw(root / "flowers-102")
        classes = [f"{i:03d}" for i in range(102)]
        return _checked(ListDataset(items["train"], classes, train_tf), ListDataset(items["val"], classes, eval_tf),
                        ListDataset(items["test"], classes, eval_tf), num_cls, set_name, root)
    expected = None if set_name == "Folder" else num_cls
    if set_name == "Flower102" and not (root / "Flower102").is_dir():
        raise DatasetError(
            f"Flower102 not found under {root}: expected {root}/Flower102/{{train,val,test}}/<class>/ "
            f"(build it with: python -m llf_ke.prepare_flower102 --src <folder holding flowers-102/> --dst {root}) "
            "or a torchvision flowers-102/ folder; set the root with --data")
    train = image_folder_split(root, set_name, "train", train_tf, expected)
    if set_name in THREE_SPLIT_SETS:
        val = image_folder_split(root, set_name, "val", eval_tf, expected)
        test = image_folder_split(root, set_name, "test", eval_tf, expected)
    else:
        val = image_folder_split(root, set_name, "test", eval_tf, expected)
        test = None
    for ds in (train, val, test):
        if ds is not None:
            ds.loader = read_rgb  # a corrupt image stops the run with one line naming it
    for name, ds in (("val", val), ("test", test)):
        if ds is not None and ds.classes != train.classes:
            raise DatasetError(f"{root}/{set_name}: the {name} split's class folders differ from the train split's")
    return Splits(train, val, test, len(train.classes), list(train.classes))


def _checked(train, val, test, num_cls, set_name, root) -> Splits:
    for split, ds in (("train", train), ("val", val), ("test", test)):
        missing = [p for p, _ in ds.items[:1] if not Path(p).is_file()]
        if missing:
            raise DatasetError(f"{set_name} {split} image {missing[0]} not found under {root}")
        bad = [lab for _, lab in ds.items if not 0 <= lab < num_cls]
        if bad:
            raise DatasetError(f"{set_name} {split}: label {bad[0]} outside 0..{num_cls - 1}")
    return Splits(train, val, test, num_cls, list(train.classes))


def dataset_targets(dataset: Dataset) -> list[int]:
    if hasattr(dataset, "targets"):
        return [int(t) for t in dataset.targets]
    return [int(label) for _, label in dataset.items]


class PairBatchSampler:
    """CS-KD batches: ``batch_size // 2`` anchors (a random permutation, last batch kept), then
    for each anchor a random other image of the same class (itself if it is alone)."""

    def __init__(self, dataset: Dataset, batch_size: int) -> None:
        self.targets = dataset_targets(dataset)
        self.anchors = max(1, batch_size // 2)
        self.by_class: dict[int, list[int]] = {}
        for index, label in enumerate(self.targets):
            self.by_class.setdefault(label, []).append(index)

    def __len__(self) -> int:
        return (len(self.targets) + self.anchors - 1) // self.anchors

    def __iter__(self):
        order = torch.randperm(len(self.targets)).tolist()
        for start in range(0, len(order), self.anchors):
            batch = order[start:start + self.anchors]
            partners = []
            for index in batch:
                pool = self.by_class[self.targets[index]]
                if len(pool) == 1:
                    partners.append(index)
                    continue
                pick = pool[int(torch.randint(len(pool) - 1, (1,)))]
                partners.append(pick if pick != index else pool[-1])
            yield batch + partners


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, pin: bool,
                pairs: bool = False, dist: Dist | None = None) -> DataLoader:
    """Train: a fresh random permutation each epoch from torch's global RNG, last batch kept.

    Several ranks (``dist``): the same global minibatches, drawn alike on every rank, each rank
    loading its share of every one (:class:`~llf_ke.ddp.RankShareBatchSampler`).
    """
    if dist is not None and dist.enabled:
        inner = (PairBatchSampler(dataset, batch_size) if pairs else
                 BatchSampler(RandomSampler(dataset) if train else SequentialSampler(dataset), batch_size,
                              drop_last=False))
        return DataLoader(dataset, batch_sampler=RankShareBatchSampler(inner, dist, keep_empty=train, pairs=pairs),
                          num_workers=workers, pin_memory=pin, worker_init_fn=seed_worker_by_rank(dist.rank))
    if pairs:
        return DataLoader(dataset, batch_sampler=PairBatchSampler(dataset, batch_size), num_workers=workers,
                          pin_memory=pin)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=workers,
                      pin_memory=pin, drop_last=False, persistent_workers=False)


__all__ = ["Splits", "load_splits", "make_loader", "read_flowers102_raw", "read_ke_lists", "transforms_for", "resize_side"]


def make_loaders(splits: Splits, cfg, dist: Dist) -> dict[str, DataLoader | None]:
    """The run's train / val / test loaders (test only with ``--eval_tst``), each rank's share under torchrun."""
    pin = dist.device.type == "cuda"
    common = {"workers": cfg.num_threads, "pin": pin, "dist": dist}
    return {"train": make_loader(splits.train, cfg.batch_size, train=True, pairs=cfg.cs_kd, **common),
            "val": make_loader(splits.val, cfg.batch_size, train=False, **common),
            "test": (make_loader(splits.test, cfg.batch_size, train=False, **common)
                     if splits.test is not None and cfg.eval_tst else None)}
