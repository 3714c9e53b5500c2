"""Export a small real dataset into the ImageFolder layout that ``--set Folder`` reads.

    python -m llf_ke.prepare_folder digits --dst DIR [--train_per_class 15 --val_per_class 30]
    python -m llf_ke.prepare_folder cifar10-jpeg --src ../shared/data --dst DIR --train_per_class 20 ...

Writes ``DIR/Folder/{train,val,test}/<class>/NNNN.png`` (32x32 RGB):

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download), upscaled to
  32x32 (nearest neighbour) and replicated to RGB; per class, the first ``train_per_class``
  images (in a seeded shuffle) train, the next ``val_per_class`` validate, the rest test.
* ``cifar10-jpeg``: the JPEG CIFAR-10 zip (``<src>/cifar10-jpeg/cifar10-jpeg.zip``, read in
  place); train and val come from the train split, test from the test split
  (``test_per_class`` images per class, all of them by default).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from forgetting_common.atomic import current_umask
from forgetting_common.cli import OneLineErrorParser, non_negative_int, positive_int
from forgetting_common.data import DatasetError, resolve_root
from forgetting_common.errors import UserError, run_main
from forgetting_common.runlog import progress


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Build a folder under a hidden temporary name beside ``target``; rename it into place only
    once complete, so an interrupted export never leaves a half-filled ``target``."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; remove it or choose another --dst")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if target.exists():
            target.rmdir()  # the empty folder checked above
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_digits(dst: str | Path, train_per_class: int = 15, val_per_class: int = 30, seed: int = 0,
                  test_per_class: int | None = None) -> dict[str, int]:
    from forgetting_common.data import load_digits

    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0, "test": 0}
    with staged(Path(dst) / "Folder") as target:
        _export_digits(target, images, labels, rng, counts, train_per_class, val_per_class, test_per_class)
    return counts


def _export_digits(target, images, labels, rng, counts, train_per_class, val_per_class, test_per_class) -> None:
    for c in progress(range(10), desc="digits", unit="class"):
        idx = np.flatnonzero(labels.numpy() == c)
        rng.shuffle(idx)
        if len(idx) <= train_per_class + val_per_class:
            raise UserError(f"digit {c} has only {len(idx)} images; lower --train_per_class/--val_per_class")
        parts = {"train": idx[:train_per_class], "val": idx[train_per_class:train_per_class + val_per_class],
                 "test": idx[train_per_class + val_per_class:][:test_per_class]}
        for split, ids in parts.items():
            for j, i in enumerate(ids):
                small = (images[i].numpy().astype(np.float32) * (255.0 / 16.0)).astype(np.uint8)
                big = np.kron(small, np.ones((4, 4), dtype=np.uint8))
                _save(np.repeat(big[:, :, None], 3, axis=2), target / split / f"{c}" / f"{j:04d}.png")
                counts[split] += 1


def export_cifar10_jpeg(src: str | Path | None, dst: str | Path, train_per_class: int = 20, val_per_class: int = 20,
                        test_per_class: int | None = None, seed: int = 0) -> dict[str, int]:
    root = resolve_root(src, "../shared/data")
    zpath = root / "cifar10-jpeg" / "cifar10-jpeg.zip"
    if not zpath.is_file():
        raise DatasetError(f"JPEG CIFAR-10 not found at {zpath}: expected <root>/cifar10-jpeg/cifar10-jpeg.zip; "
                           "set the root with --src or FORGETTING_DATA")
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0, "test": 0}
    try:
        with zipfile.ZipFile(zpath) as archive, staged(Path(dst) / "Folder") as target:
            _export_cifar(archive, zpath, target, rng, counts, train_per_class, val_per_class, test_per_class)
    except zipfile.BadZipFile as err:
        raise DatasetError(f"{zpath} is not a readable zip archive ({err})") from err
    return counts


def _export_cifar(archive, zpath, target, rng, counts, train_per_class, val_per_class, test_per_class) -> None:
    from PIL import Image

    names = [n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    by = {}
    for n in names:
        parts = n.split("/")
        if len(parts) >= 3:
            by.setdefault((parts[-3], parts[-2]), []).append(n)
    classes = sorted({c for (s, c) in by if s == "train"})
    if not classes:
        raise DatasetError(f"{zpath}: expected train/<class>/*.jpg and test/<class>/*.jpg inside")
    for c in progress(classes, desc="cifar10-jpeg", unit="class"):
        train_files = sorted(by.get(("train", c), []))
        test_files = sorted(by.get(("test", c), []))
        order = rng.permutation(len(train_files))
        chosen = {"train": [train_files[i] for i in order[:train_per_class]],
                  "val": [train_files[i] for i in order[train_per_class:train_per_class + val_per_class]],
                  "test": test_files if test_per_class is None else
                  [test_files[i] for i in rng.permutation(len(test_files))[:test_per_class]]}
        for split, files in chosen.items():
            for j, name in enumerate(files):
                try:
                    with Image.open(io.BytesIO(archive.read(name))) as img:
                        rgb = np.asarray(img.convert("RGB"))
                except (OSError, ValueError, SyntaxError) as err:
                    raise DatasetError(f"image {name} in {zpath} cannot be decoded ({err})") from err
                _save(rgb, target / split / c / f"{j:04d}.png")
                counts[split] += 1


def main(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(prog="prepare_folder", description="export digits or a JPEG CIFAR-10 subset as Folder/")
    p.add_argument("source", choices=["digits", "cifar10-jpeg"])
    p.add_argument("--dst", required=True, help="data root to write Folder/ into (the --data of train_KE_cls.py)")
    p.add_argument("--src", default=None, help="cifar10-jpeg: root holding cifar10-jpeg/cifar10-jpeg.zip (default $FORGETTING_DATA)")
    p.add_argument("--train_per_class", type=positive_int, default=15)
    p.add_argument("--val_per_class", type=positive_int, default=30)
    p.add_argument("--test_per_class", type=positive_int, default=None)
    p.add_argument("--seed", type=non_negative_int, default=0)
    a = p.parse_args(argv)
    print(f"prepare_folder: writing {Path(a.dst) / 'Folder'}", file=sys.stderr)
    if a.source == "digits":
        counts = export_digits(a.dst, a.train_per_class, a.val_per_class, a.seed, a.test_per_class)
    else:
        counts = export_cifar10_jpeg(a.src, a.dst, a.train_per_class, a.val_per_class, a.test_per_class, a.seed)
    print(f"{Path(a.dst) / 'Folder'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="prepare_folder")
