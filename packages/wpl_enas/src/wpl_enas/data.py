"""Datasets of the search: text corpora (PTB layout), CIFAR-10 and custom image folders; and the
small classification sets of ``two_models.py``.

Text: ``{data_dir}/{dataset}/{train,valid,test}.txt`` (spec §5.1), read with
``forgetting_common.data.Corpus`` and cut into columns with ``batchify``.

Images: ``cifar10`` from ``{data_dir}/cifar-10-batches-py`` (torchvision's pickles) or the JPEG
CIFAR-10 zip (``{data_dir}/cifar10-jpeg/cifar10-jpeg.zip``); any other dataset from
``{data_dir}/{dataset}/{train,valid,test}/`` with class subfolders, a ``labels.csv``
(``filename,label``) or, failing both, a flat folder whose labels are all 0 (spec §5.3). Images
are held as normalised float tensors on the device and batched by index (no DataLoader).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from forgetting_common.data import (
    DATA_ENV,
    Corpus,
    DatasetError,
    batchify,
    load_cifar,
    load_mnist,
    resolve_root,
)
from forgetting_common.data.cifar import IMAGE_SUFFIXES
from forgetting_common.data.tensors import augment_batch

logger = logging.getLogger("wpl_enas")

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
TEXT_LAYOUT = "{root}/{name}/{{train,valid,test}}.txt"
IMAGE_LAYOUT = "{root}/{name}/{{train,valid,test}}/ (class subfolders, labels.csv, or flat images)"


def resolve_data_dir(data_dir: str, dataset: str) -> Path:
    """``--data_dir`` as given; if the dataset is not there and the flag kept its default ``data``,
    try ``$FORGETTING_DATA`` (where the shared real datasets lie)."""
    root = Path(data_dir).expanduser()
    if dataset_present(root, dataset):
        return root
    env = os.environ.get(DATA_ENV)
    if data_dir == "data" and env and dataset_present(Path(env).expanduser(), dataset):
        logger.info("dataset %s not under ./data; using $%s=%s", dataset, DATA_ENV, env)
        return Path(env).expanduser()
    return root


def dataset_present(root: Path, dataset: str) -> bool:
    if dataset == "cifar10":
        return (root / "cifar-10-batches-py").is_dir() or (root / "cifar10-jpeg").exists()
    return (root / dataset).is_dir()


def dataset_kind(root: Path, dataset: str) -> str:
    """``text``, ``cifar10`` or ``images``; a clear error when the folder is missing or empty."""
    if dataset == "cifar10":
        return "cifar10"
    folder = root / dataset
    if not folder.is_dir():
        raise DatasetError(
            f"dataset {dataset!r} not found: {folder} does not exist; expected "
            f"{TEXT_LAYOUT.format(root=root, name=dataset)} or {IMAGE_LAYOUT.format(root=root, name=dataset)} "
            "(set the root with --data_dir)")
    if (folder / "train").is_dir():
        return "images"
    if (folder / "train.txt").is_file():
        return "text"
    raise DatasetError(
        f"dataset folder {folder} has no train.txt and no train/ folder; expected "
        f"{TEXT_LAYOUT.format(root=root, name=dataset)} or {IMAGE_LAYOUT.format(root=root, name=dataset)}")


# ---------------------------------------------------------------------------------------- text
class TextData:
    """PTB-style corpus: ``train``/``valid`` batchified with ``batch_size``, ``eval``/``test`` with
    ``test_batch_size`` (all time-major ``rows × columns`` int64 on the device)."""

    def __init__(self, path: Path, batch_size: int, test_batch_size: int, device: torch.device,
                 train_limit: int | None = None, test_limit: int | None = None) -> None:
        corpus = Corpus(path, flag="--data_dir")
        self.corpus = corpus
        self.num_tokens = corpus.num_tokens  # the vocabulary of the whole files, slices or not
        if train_limit:
            corpus.train = corpus.train[:train_limit]
        if test_limit:
            corpus.valid, corpus.test = corpus.valid[:test_limit], corpus.test[:test_limit]
        self.train = batchify(corpus.train, batch_size, device)
        self.valid = batchify(corpus.valid, batch_size, device)
        self.eval = batchify(corpus.valid, test_batch_size, device)
        self.test = batchify(corpus.test, test_batch_size, device)
        for name in ("train", "valid", "eval", "test"):
            if getattr(self, name).size(0) < 2:
                raise DatasetError(f"{path}: the {name} split is too short for the batch size")

    def state_dict(self) -> dict:
        return {}  # the text positions restart with every phase: nothing carries over an epoch

    def load_state_dict(self, state: dict) -> None:
        pass


def get_batch(source: torch.Tensor, idx: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx…idx+len-1`` as inputs and ``idx+1…idx+len`` (flattened) as targets."""
    seq_len = min(length, source.size(0) - 1 - idx)
    return source[idx: idx + seq_len], source[idx + 1: idx + 1 + seq_len].reshape(-1)


# -------------------------------------------------------------------------------------- images
@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8 [N, C, H, W] on the device (normalised per batch)
    labels: torch.Tensor  # int64 [N]
    mean: tuple
    std: tuple

    def __len__(self) -> int:
        return int(self.labels.numel())

    def normalise(self, x_u8: torch.Tensor) -> torch.Tensor:
        return _normalise(x_u8, self.mean, self.std, x_u8.device)

    def batch(self, i: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = slice(i * batch_size, (i + 1) * batch_size)
        return self.normalise(self.images[s]), self.labels[s]

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


class ImageData:
    """Train (shuffled, crop+flip augmented), valid (fixed order) and test splits as tensors."""

    def __init__(self, train: ImageSplit, valid: ImageSplit, test: ImageSplit, num_classes: int,
                 batch_size: int, test_batch_size: int, seed: int, augment: bool = True) -> None:
        self.train, self.valid, self.test = train, valid, test
        self.num_classes = num_classes
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)
        self._order: torch.Tensor | None = None
        self._pos = 0

    def next_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next shuffled training batch; a new epoch order when the current one runs out."""
        n = len(self.train)
        if self._order is None or self._pos >= n:
            self._order = torch.randperm(n, generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos: self._pos + self.batch_size].to(self.train.images.device)
        self._pos += self.batch_size
        x = self.train.images[idx]
        if self.augment:  # on the uint8 pixels, so the crop pads with black as torchvision does
            x = augment_batch(x, crop_padding=4, flip=True, generator=self.generator)
        return self.train.normalise(x), self.train.labels[idx]

    def state_dict(self) -> dict:
        """Where the shuffled pass stands (it runs across epochs) and the generator behind it."""
        return {"generator": self.generator.get_state(), "order": self._order, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._order, self._pos = state["order"], int(state["pos"])

    def valid_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        nb = self.valid.num_batches(self.batch_size)
        return self.valid.batch(i % nb, self.batch_size)


def _normalise(images_u8: torch.Tensor, mean, std, device) -> torch.Tensor:
    x = images_u8.to(device=device, dtype=torch.float32) / 255.0
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x - m) / s


def load_cifar10(root: Path, batch_size: int, test_batch_size: int, device: torch.device, seed: int,
                 train_limit: int | None = None, test_limit: int | None = None) -> ImageData:
    """CIFAR-10: the 50k training split; valid = test = the 10k test split (as in the original)."""
    candidates = [root] + ([Path("data")] if root != Path("data") else [])
    last: Exception | None = None
    for cand in candidates:
        try:
            xtr, ytr, _ = load_cifar(cand, "cifar10", train=True)
            xte, yte, _ = load_cifar(cand, "cifar10", train=False)
            break
        except DatasetError as err:
            last = err
    else:
        raise DatasetError(f"CIFAR-10 not found under {root}: expected {root}/cifar-10-batches-py/ (torchvision "
                           f"pickles) or {root}/cifar10-jpeg/cifar10-jpeg.zip; set --data_dir ({last})")
    if train_limit:
        xtr, ytr = xtr[:train_limit], ytr[:train_limit]
    if test_limit:
        xte, yte = xte[:test_limit], yte[:test_limit]
    train = ImageSplit(xtr.to(device), ytr.to(device), CIFAR_MEAN, CIFAR_STD)
    test = ImageSplit(xte.to(device), yte.to(device), CIFAR_MEAN, CIFAR_STD)
    return ImageData(train, test, test, 10, batch_size, test_batch_size, seed)


def _read_image(path: Path, height: int, width: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path} ({err})") from err


def read_image_split(folder: Path, height: int, width: int, classes: list[str] | None = None):
    """One split folder → (uint8 [N, 3, H, W], labels, class names). Three layouts, spec §5.3."""
    if not folder.is_dir():
        raise DatasetError(f"image split {folder} not found; expected {folder}/<class>/*.jpg, "
                           f"{folder}/*.jpg with labels.csv, or {folder}/*.jpg")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    files: list[tuple[Path, int]] = []
    if subdirs:
        names = classes if classes is not None else [d.name for d in subdirs]
        index = {n: i for i, n in enumerate(names)}
        for d in subdirs:
            if d.name not in index:
                raise DatasetError(f"{d}: class {d.name!r} is not among the training classes {names}")
            found = [(f, index[d.name]) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise DatasetError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
    else:
        flat = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        labels_csv = folder / "labels.csv"
        if labels_csv.is_file():
            with open(labels_csv, newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.reader(handle) if r and r[0] != "filename"]
            try:
                mapping = {r[0]: int(r[1]) for r in rows}
            except (IndexError, ValueError) as err:
                raise DatasetError(f"{labels_csv}: expected lines 'filename,label' with integer labels") from err
            missing = [f.name for f in flat if f.name not in mapping]
            if missing:
                raise DatasetError(f"{labels_csv} has no label for {missing[:3]}")
            files = [(f, mapping[f.name]) for f in flat]
            names = classes if classes is not None else [str(i) for i in range(max(mapping.values()) + 1)]
        else:
            logger.warning("%s holds images without class folders or labels.csv: every label is 0", folder)
            files = [(f, 0) for f in flat]
            names = classes if classes is not None else ["0"]
    if not files:
        raise DatasetError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = np.stack([_read_image(f, height, width) for f, _ in files]).transpose(0, 3, 1, 2)
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(arrays)), labels, names


def load_image_folder(root: Path, dataset: str, *, height: int, width: int, batch_size: int, test_batch_size: int,
                      device: torch.device, seed: int, train_limit: int | None = None,
                      test_limit: int | None = None) -> ImageData:
    base = root / dataset
    xtr, ytr, names = read_image_split(base / "train", height, width)
    xva, yva, _ = read_image_split(base / "valid", height, width, names)
    xte, yte, _ = read_image_split(base / "test", height, width, names)
    if train_limit:
        xtr, ytr = xtr[:train_limit], ytr[:train_limit]
    if test_limit:
        xva, yva, xte, yte = xva[:test_limit], yva[:test_limit], xte[:test_limit], yte[:test_limit]
    num_classes = max(len(names), int(ytr.max()) + 1)
    xf = xtr.to(torch.float32) / 255.0
    mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
    std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    train = ImageSplit(xtr.to(device), ytr.to(device), mean, std)
    valid = ImageSplit(xva.to(device), yva.to(device), mean, std)
    test = ImageSplit(xte.to(device), yte.to(device), mean, std)
    return ImageData(train, valid, test, num_classes, batch_size, test_batch_size, seed)


def load_image_data(config, root: Path, kind: str, device: torch.device) -> ImageData:
    """The image set a ``main.py``/``retrain.py`` :class:`~wpl_enas.cli.Config` names (CIFAR-10 or a folder)."""
    if kind == "cifar10":
        return load_cifar10(root, config.batch_size, config.test_batch_size, device, config.random_seed,
                            train_limit=config.train_limit, test_limit=config.test_limit)
    return load_image_folder(root, config.dataset, height=config.cnn_height, width=config.cnn_width,
                             batch_size=config.batch_size, test_batch_size=config.test_batch_size, device=device,
                             seed=config.random_seed, train_limit=config.train_limit, test_limit=config.test_limit)


# ------------------------------------------------------------------------------ two models
def load_two_model_data(dataset: str, data_dir: str | None, data_seed: int, train_limit: int | None = None,
                        test_limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of ``two_models.py``, flattened: ``clusters`` (10 noisy
    Gaussian clusters in 32 dimensions, 3,000/1,000), ``digits`` (scikit-learn's 8×8 digits) or MNIST."""
    if dataset == "clusters":
        rng = np.random.default_rng(data_seed)
        c, d = 10, 32
        means = rng.normal(size=(c, d))
        def draw(n):
            y = rng.integers(0, c, size=n)
            return np.tanh(means[y] + rng.normal(size=(n, d))).astype(np.float32), y
        xtr, ytr = draw(3000)
        xte, yte = draw(1000)
        xtr, ytr, xte, yte = map(torch.as_tensor, (xtr, ytr, xte, yte))
    elif dataset == "digits":
        from forgetting_common.data import load_digits

        x, y = load_digits()
        x = x.reshape(len(x), -1).float() / 16.0
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(data_seed))
        x, y = x[perm], y[perm]
        xtr, ytr, xte, yte = x[:1497], y[:1497], x[1497:], y[1497:]
    else:
        root = resolve_root(data_dir, "data")
        xtr, ytr = load_mnist(root, train=True)
        xte, yte = load_mnist(root, train=False)
        xtr = xtr.reshape(len(xtr), -1).float() / 255.0
        xte = xte.reshape(len(xte), -1).float() / 255.0
    if train_limit:
        xtr, ytr = xtr[: train_limit], ytr[: train_limit]
    if test_limit:
        xte, yte = xte[: test_limit], yte[: test_limit]
    return xtr.float(), ytr.long(), xte.float(), yte.long()
