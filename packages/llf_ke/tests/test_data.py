"""Dataset layouts: Flower102 from torchvision's flowers-102 files, KE's lists, the Folder set."""

from __future__ import annotations

import numpy as np
import pytest
from forgetting_common.errors import UserError
from llf_ke.data import load_splits
from llf_ke.prepare_flower102 import main as prepare_main
from PIL import Image


def _fake_flowers102(root, per_class=(1, 1, 2)):
    """torchvision's layout: flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}."""
    from scipy.io import savemat

    raw = root / "flowers-102"
    (raw / "jpg").mkdir(parents=True)
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    n = 0
    for c in range(102):
        for key, count in zip(ids, per_class):
            for _ in range(count):
                n += 1
                labels.append(c + 1)  # 1-based in the .mat file
                ids[key].append(n)
                Image.fromarray(np.full((12, 10, 3), c, dtype=np.uint8)).save(raw / "jpg" / f"image_{n:05d}.jpg")
    savemat(raw / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(raw / "setid.mat", {k: np.array([v]) for k, v in ids.items()})
    return raw


def test_prepare_flower102_and_direct_read(tmp_path, capsys):
    _fake_flowers102(tmp_path / "src")
    # read directly: Flower102 auto-detects the raw layout
    direct = load_splits(tmp_path / "src", "Flower102", 102, image_size=16)
    assert (len(direct.train), len(direct.val), len(direct.test)) == (102, 102, 204)
    prepare_main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")])
    assert "train 102, val 102, test 204" in capsys.readouterr().out
    splits = load_splits(tmp_path / "dst", "Flower102", 102, image_size=16)
    assert splits.classes[:3] == ["000", "001", "002"] and len(splits.test) == 204
    # class index == torchvision's 0-based label: image of class 7 sits in folder 007
    path, label = splits.train.samples[7]
    assert label == 7 and "/007/" in path
    x, y = splits.train[7]
    assert tuple(x.shape) == (3, 16, 16) and y == 7
    with pytest.raises(UserError, match="already exists"):
        prepare_main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")])


def test_interrupted_prepare_leaves_no_half_filled_folder(tmp_path, monkeypatch):
    """Killed (here: the disk fills) half-way: neither Flower102/ nor its staging folder remains."""
    import errno
    import os

    _fake_flowers102(tmp_path / "src")
    real = os.symlink
    calls = []

    def symlink(src, dst):
        calls.append(dst)
        if len(calls) > 50:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "symlink", symlink)
    with pytest.raises(OSError, match="No space left"):
        prepare_main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")])
    assert list((tmp_path / "dst").iterdir()) == []
    monkeypatch.setattr(os, "symlink", real)
    prepare_main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")])  # a rerun just works
    assert len(list((tmp_path / "dst" / "Flower102" / "test").rglob("*.jpg"))) == 204


def test_ke_lists_layout(tmp_path):
    base = tmp_path / "flower102"
    (base / "jpg").mkdir(parents=True)
    (base / "lists").mkdir()
    for split in ("trn", "val", "tst"):
        rows = ["file_name,label"]
        for c in range(102):
            name = f"{split}_{c}.jpg"
            Image.fromarray(np.full((9, 9, 3), c, dtype=np.uint8)).save(base / "jpg" / name)
            rows.append(f"jpg/{name},{c}")
        (base / "lists" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    splits = load_splits(tmp_path, "Flower102Pytorch", 102, image_size=16)
    assert len(splits.train) == 102 and splits.train[5][1] == 5


def test_two_split_sets_use_test_as_val(tmp_path):
    from llf_ke.fake import write_fake_folder_set

    write_fake_folder_set(tmp_path, "CIFAR10", 10, {"train": 2, "test": 1}, size=32)
    splits = load_splits(tmp_path, "CIFAR10", 10)
    assert splits.test is None and len(splits.val) == 10
    with pytest.raises(UserError, match="10 class folders but MIT67 has 67"):
        write_fake_folder_set(tmp_path, "MIT67", 10, {"train": 1, "test": 1}, size=8)
        load_splits(tmp_path, "MIT67", 67)


def test_folder_set_counts_classes(tmp_path):
    from llf_ke.fake import write_fake_folder_set

    write_fake_folder_set(tmp_path, "Folder", 4, {"train": 1, "val": 1, "test": 1}, size=8)
    assert load_splits(tmp_path, "Folder", 0, image_size=8).num_classes == 4
